"""Defaults in one home: every setting that a command-line flag and a Python keyword both take (``tuner run`` and
``tune()``, ``tuner measure`` and ``measure_config()``, ``export``, ``verify``, ``explain``) reads its default here,
so the two cannot drift; ``tests/test_defaults.py`` checks each keyword against its flag. Torch-free: the command
line reads it before anything loads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defaults:
    # the workload (tuner run / measure; tune(), measure_config())
    model: str = "resnet18"  # trained here on `data` when no weights are given
    data: str = "digits"  # scikit-learn's digits at 32 px: built in, offline
    seed: int = 0  # the data split, the baseline's training and the sampler
    studies_dir: str = "studies"  # studies, caches and artifacts
    # the study (tuner run; tune())
    space: str = "default"  # search_spaces/default.yaml
    objectives: str = "accuracy_latency"  # objectives/accuracy_latency.yaml
    sampler: str = "tpe"
    heartbeat: float = 10.0  # seconds between a running trial's heartbeats; 3 missed mark its worker dead
    max_retries: int = 1  # re-runs of a trial whose worker died or crashed
    remeasure_rounds: int = 3  # a median of 3 outlasts one round in a slow phase
    corruptions: bool = False  # score trials on the corruption set too (implied by objectives using corruption_drop)
    # under load (tuner measure --load; measure_config(load=True))
    utilisation: float = 0.5  # Poisson arrivals at this share of the rate the closed loop answered
    # export, verify, explain
    torch_format: str = "export"  # torch.export's program (state_dict: its fallback)
    latency_tolerance: float = 0.10  # verify: within the recorded 95% CI or within 10% of the median
    repeats: int = 30  # explain: profiled calls per build (the median per layer)


DEFAULTS = Defaults()
