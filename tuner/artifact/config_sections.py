"""config.yaml's sections filled in for an export (``export_config``): the study and the pick, the artifact's
files and their hashes, how it was served, both measurements with their per-sample CIs, the data, the libraries."""

from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tuner import hardware, results
from tuner.artifact.config import ExportConfig
from tuner.artifact.kinds.base import ExportKind, Saved
from tuner.artifact.rebuild import Remeasured
from tuner.cache import sha256_file
from tuner.candidate import Candidate
from tuner.metric import Metric, metric_words
from tuner.names import EXPORT_FORMAT, INPUT, OUTPUT
from tuner.record import TrialRecord
from tuner.study.storage import mask_url


def _with_per_sample_ci(metrics: dict[str, Any]) -> dict[str, Any]:
    return (
        {**metrics, "per_sample_ci_ms": list(results.per_sample_ci(metrics))}
        if "latency_ms" in metrics
        else dict(metrics)
    )


def library_versions() -> dict[str, str]:
    import onnxruntime
    import torch

    return {
        **hardware.library_versions(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch (imported)": torch.__version__,
        "onnxruntime (imported)": onnxruntime.__version__,
    }


def export_config(
    study: optuna.Study,
    trial: TrialRecord,
    why: str,
    storage: str | None,
    metric: Metric | None,
    again: Remeasured,
    kind: ExportKind,
    saved: Saved,
    directory: Path,
) -> ExportConfig:
    """config.yaml's record of the export whose files are in ``directory``."""
    candidate, metrics, kept, spec, data = again.candidate, again.metrics, again.study, again.spec, again.workload.data
    artifact = saved.file
    return ExportConfig(
        format=EXPORT_FORMAT,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        study={
            "name": study.study_name,
            "storage": mask_url(storage) if storage else None,
            "trial": trial.number,
            "selected_by": why,
            "duplicate_of": trial.duplicate_of,
            # what metrics.export's accuracy is: the study's metric where it was scored again here
            "metric": metric_words(kept.metric)
            if not again.scored or (metric is not None and metric.custom)
            else "top-1 accuracy",
        },
        candidate=candidate.to_dict(),
        artifact={
            "file": artifact,
            "kind": kind.name,
            "runtime": candidate.placement,
            "sha256": sha256_file(directory / artifact),
            "bytes": (directory / artifact).stat().st_size,
            "files": {p.name: sha256_file(p) for p in sorted(directory.iterdir())},  # every model file
            **saved.details,  # the kind's own: the IR's compile config, how to rebuild a state_dict
            "input": {
                "name": INPUT,
                "shape": ["batch", 3, data.resolution, data.resolution],
                "dtype": saved.input_dtype,
                "preprocessing": "float32 NCHW as the data gave it"
                if data.preprocessed
                else "RGB uint8 NCHW -> (x / 255 - mean) / std per channel",
            },
            "output": {"name": OUTPUT, "shape": ["batch", data.num_classes]},
        },
        serving=serving_record(candidate, metrics),
        metrics={"study": _with_per_sample_ci(again.recorded), "export": _with_per_sample_ci(metrics)},
        latency_trust=again.trust,
        reference_accuracy=again.reference,
        holdout=again.held_out,
        workload=spec.to_record(),
        data={
            "name": data.name,
            "fingerprint": data.fingerprint,
            "resolution": data.resolution,
            "mean": data.mean,
            "std": data.std,
            "classes": list(data.classes),
            "validation_images": len(data.val),
            "preprocessed": data.preprocessed,
            # the build cache that holds the decoded images: verify maps them from there when it can
            "cache": str(Path(spec.cache_dir).resolve()) if spec.cache_dir else None,
        },
        weights=(
            {"path": str(Path(spec.weights).resolve()), "sha256": sha256_file(spec.weights)} if spec.weights else None
        ),
        hardware=again.here,
        study_hardware=again.there,
        libraries=library_versions(),
    )


def serving_record(candidate: Candidate, metrics: dict[str, Any]) -> dict[str, Any]:
    """How the artifact was served when measured: streams, requests in flight, batch, threads per stream, what the
    runtime reported of them, and the load it was measured under (None: one call at a time, not under load)."""
    load = metrics.get("load")
    return {
        "streams": candidate.streams,
        "requests": candidate.in_flight,
        "batch_size": candidate.batch_size,
        "threads": int(metrics["threads"]),
        "runtime": (load or {}).get("serving"),
        "load": {
            "closed_in_flight": candidate.in_flight,
            **load["policy"],
            "open_rate_per_s": load["open"]["rate"],
            "open_arrivals": "poisson",
        }
        if load
        else None,
    }
