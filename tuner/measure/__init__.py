"""Measuring a built candidate: ``measure`` (``measurement.py``: open the session, accuracy, latency and the load,
read-backs), latency statistics (``latency.py``), the quiet-host probe (``host.py``), the load generator
(``load.py``). The names below load lazily, so that ``import tuner.measure.latency`` (numpy only) loads no torch.
"""

from __future__ import annotations

from typing import Any

_HOMES = {
    "Metrics": "measurement",
    "resolve_threads": "measurement",
    "open_session": "measurement",
    "serve_session": "measurement",
    "time_session": "measurement",
    "holdout_accuracy": "measurement",
    "measure": "measurement",
    "LoadPolicy": "load",
    "LatencyPolicy": "latency",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tuner.measure' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"tuner.measure.{_HOMES[name]}"), name)
