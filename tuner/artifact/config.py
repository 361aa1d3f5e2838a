"""An export's ``config.yaml`` as a typed record: every section it holds, written in this order as plain YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """YAML-safe: tuples to lists, numpy scalars to Python numbers, paths to strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, str)):  # str subclasses too (torch.__version__ is a TorchVersion)
        return str(value)
    return value


@dataclass(frozen=True)
class ExportConfig:
    """What ``tuner export`` records and ``tuner verify`` checks against (its readers index the written dict)."""

    format: str  # tuner.names.EXPORT_FORMAT
    created: str  # UTC, ISO 8601
    study: dict[str, Any]  # name, storage (password masked), trial, why it was selected, what the accuracy is
    candidate: dict[str, Any]
    artifact: dict[str, Any]  # the model file, its kind, runtime, sha256 of every file, input, output, kind's own
    serving: dict[str, Any]  # streams, requests, batch, threads, the load it was measured under
    metrics: dict[str, Any]  # {"study": as the trial recorded them, "export": measured again here}
    latency_trust: dict[str, Any]  # tuner.artifact.rebuild.latency_trust
    reference_accuracy: float | None
    holdout: dict[str, Any] | None  # the held-out split's figures, where the study kept one
    workload: dict[str, Any]  # WorkloadSpec.to_record(): what verify loads the data by
    data: dict[str, Any]
    weights: dict[str, Any] | None  # the baseline's weights file and its sha256, where one was given
    hardware: dict[str, Any]  # this machine's fingerprint
    study_hardware: dict[str, Any] | None  # the study's
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def write(self, path: Path) -> None:
        import yaml

        path.write_text(
            "# written by `tuner export`; check it with `tuner verify DIR`\n"
            + yaml.safe_dump(self.to_dict(), sort_keys=False),
            encoding="utf-8",
        )
