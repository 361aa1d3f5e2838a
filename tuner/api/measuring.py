"""``measure_config``: one configuration built and measured, from Python and from ``tuner measure`` alike (the command
line only parses its flags and prints the result). Every setting is checked before torch loads or anything is
allocated; the build and the figures are the study's own (``tuner.passes.chain.build``, ``tuner.measure.measure``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.defaults import DEFAULTS
from tuner.errors import TunerError, in_keywords
from tuner.logs import stderr

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.measure.measurement import Metrics


@dataclass(frozen=True)
class Measured:
    """One configuration's figures: the study's metrics of it, its accuracy on the held-out split, the build's steps."""

    candidate: Candidate
    metrics: Metrics
    holdout_accuracy: float | None  # None: no held-out split
    validation_images: int
    holdout_images: int
    build_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """What ``tuner measure --json`` prints."""
        return {
            **self.metrics.to_dict(),
            "holdout_accuracy": self.holdout_accuracy,
            "config": self.candidate.to_dict(),
            "build_seconds": self.build_seconds,
        }


@in_keywords
def measure_config(
    config: Candidate | dict[str, Any] | str | Path,
    model: str = DEFAULTS.model,
    data: str = DEFAULTS.data,
    *,
    weights: str | None = None,
    student: str | None = None,
    resolution: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = DEFAULTS.seed,
    holdout: float | None = None,
    train_steps: int | None = None,
    recover_steps: int | None = None,
    studies_dir: str = DEFAULTS.studies_dir,
    load: bool = False,
    utilisation: float = DEFAULTS.utilisation,
    rate: float | None = None,
    log: Callable[[str], None] = stderr,
) -> Measured:
    """Build ``config`` (a ``Candidate``, a mapping of candidate keys, or a YAML file of them) for ``model`` on
    ``data`` and measure it as a study's trial is measured: accuracy, latency (and, with ``load``, the closed loop
    at its requests in flight, then Poisson arrivals at ``utilisation`` of the rate it answered, or at ``rate``
    per second). The other keywords are ``tuner measure``'s flags (``tune()``'s workload keywords); ``log``: where
    the lines of the work (a baseline trained, images decoded) go."""
    from tuner import hardware
    from tuner.candidate import Candidate
    from tuner.data import DEFAULT_RESOLUTION
    from tuner.logs import to
    from tuner.measure.load import LoadPolicy
    from tuner.workload_spec import make_spec

    # Everything the user gave is checked before torch loads or anything is allocated.
    source = str(config) if isinstance(config, (str, Path)) else "the config"
    if isinstance(config, (str, Path)):
        candidate = Candidate.from_yaml(config)
    else:
        candidate = config if isinstance(config, Candidate) else Candidate.from_dict(config, source=source)
    spec = make_spec(
        model,
        data,
        weights,
        resolution,
        mean,
        std,
        seed,
        train_steps=train_steps,
        recover_steps=recover_steps,
        holdout=holdout,
        student=student,
        studies_dir=studies_dir,
    )
    if spec.onnx:
        candidate.check_without_torch_graph(spec.model)
    if candidate.student and not spec.student:
        raise TunerError(
            f"{source}: student: true is refused: no --student SPEC was given (your own smaller "
            "model, distilled from --model); pass --student, or set student: false."
        )
    policy = LoadPolicy(utilisation=utilisation, open_rate=rate) if load else None
    problem = hardware.check_fits(
        candidate.batch_size,
        resolution or DEFAULT_RESOLUTION.get(data, 224),
        candidate.threads,
        streams=candidate.streams,
        requests=candidate.in_flight,
    )
    if problem:
        raise TunerError(f"{source}: {problem}")

    from tuner.measure import holdout_accuracy, measure
    from tuner.passes.chain import build
    from tuner.runtimes.registry import check_supported
    from tuner.workload import load_workload

    check_supported(candidate)  # refuse before loading data or training anything
    with to(log):
        workload = load_workload(spec)
        built = build(workload, candidate)
        metrics = measure(built, workload.data, load=policy)
        held_out = holdout_accuracy(built, workload.data)
    return Measured(
        candidate, metrics, held_out, len(workload.data.val), len(workload.data.holdout or ()), built.seconds
    )
