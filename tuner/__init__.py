"""tuner: search prune ratio x precision x fusion x batch x placement for the fastest accurate-enough build.

``tuner.tune(model, train=..., val=..., metric=...)`` runs a study from Python and returns a ``TuneResult``;
``python -m tuner`` is the same from the command line; ``tuner.load(study)`` returns a stored study's result without
timing anything again; ``tuner.measure_config(config)`` builds and measures one configuration (``tuner measure``).
All load lazily: ``import tuner`` loads no torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Candidate", "Measured", "TrialPoint", "TuneResult", "load", "measure_config", "tune"]

_HOMES = {
    "tune": "tuner.api.tuning",
    "load": "tuner.api.tuning",
    "TuneResult": "tuner.api.tune_result",
    "TrialPoint": "tuner.api.tune_result",
    "Candidate": "tuner.candidate",
    "measure_config": "tuner.api.measuring",
    "Measured": "tuner.api.measuring",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tuner' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
