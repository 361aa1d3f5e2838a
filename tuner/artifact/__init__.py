"""A study point as a deployable artifact: ``select`` (which trial), ``export`` (config.yaml + the model),
``verify`` (does an export reproduce here)."""

from __future__ import annotations

from tuner.artifact.export import Exported, check_out, export, is_export
from tuner.artifact.select import select_trial
from tuner.artifact.verify import (
    Check,
    checks_table,
    latency_reproduces,
    not_compared_for_a_busy_host,
    read_config,
    verify,
)

__all__ = [
    "Check",
    "Exported",
    "check_out",
    "checks_table",
    "export",
    "is_export",
    "latency_reproduces",
    "not_compared_for_a_busy_host",
    "read_config",
    "select_trial",
    "verify",
]
