"""Export a study's chosen point: rebuild it exactly as the study did (same workload, same cached build steps),
re-measure it (``rebuild_and_measure``), save the model in its runtime's native form through the first export kind
that serves it (``save_model``; the kinds are ``tuner.artifact.kinds``: ``model.onnx`` for ONNX Runtime placements,
the OpenVINO IR beside its ONNX file for OpenVINO, a ``torch.export`` program or a ``state_dict.pt`` for torch
ones), and write ``config.yaml`` (``ExportConfig``) and a ``README.md`` with the lines that load and run it.
Everything is written to a temporary sibling (``.OUT.partial-<host>-<pid>-xxxx``) first and moved into place only
when complete; a previous export is replaced, nothing else, and the partial siblings that killed exports left are
removed by the next one."""

from __future__ import annotations

import datetime
import logging
import os
import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from tuner import guardrails, hardware, results
from tuner.artifact.config import ExportConfig
from tuner.artifact.kinds import registry
from tuner.artifact.kinds.base import ExportKind, Saved, SaveJob
from tuner.artifact.readme import readme_text
from tuner.cache import owned_temp_dir, remove_leftovers, sha256_file
from tuner.candidate import Candidate
from tuner.defaults import DEFAULTS
from tuner.errors import ConfigError, TunerError
from tuner.metric import Metric, drop_points, metric_words, top1_of
from tuner.names import CONFIG_FILE, EXPORT_FORMAT, INPUT, OUTPUT, README_FILE
from tuner.record import StudyRecord, TrialRecord, read_study
from tuner.study.storage import mask_url
from tuner.summary import guard_words
from tuner.workload_spec import WorkloadSpec, check_recorded_paths

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tuner.passes.chain import Built
    from tuner.workload import Workload

# all an export writes beside its kinds' model files, and may replace
EXPORT_FILES = (
    README_FILE,
    CONFIG_FILE,
    "profile.json",
)  # tuner.explain.trials.PROFILE_FILE: where the time goes, per layer
PARTIAL_STALE_SECONDS = 3600  # a partial export is written in seconds (after the rebuild): this old, it is a leftover


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml

    value = yaml.safe_load(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def is_export(path: Path) -> bool:
    """A directory a previous ``tuner export`` wrote (and so one that export may replace)."""
    try:
        return (path / CONFIG_FILE).is_file() and read_config_file(path / CONFIG_FILE).get("format") == EXPORT_FORMAT
    except Exception:  # noqa: BLE001 - unreadable: not an export
        return False


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory to create.")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ConfigError(f"--out {out} is not empty and not a previous export; pass a new or empty directory.")


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


@dataclass(frozen=True)
class Exported:
    out: Path
    trial: int
    artifact: str  # file name inside out
    kind: str  # its export kind's name (tuner.artifact.kinds)
    config: dict[str, Any]


@dataclass(frozen=True)
class Remeasured:
    """A study's trial rebuilt as the study built it and measured again here: what an export saves and records."""

    study: StudyRecord
    spec: WorkloadSpec
    workload: Workload
    candidate: Candidate
    built: Built
    metrics: dict[str, Any]  # measured here
    recorded: dict[str, Any]  # as the study measured it
    reference: float | None  # the baseline's accuracy the drop is from
    scored: bool  # the study scored accuracy by a function of the user's
    held_out: dict[str, Any] | None
    trust: dict[str, Any]  # latency_trust
    here: dict[str, Any]  # this machine's fingerprint
    there: dict[str, Any] | None  # the study's


def export(
    study: optuna.Study,
    trial: TrialRecord,
    why: str,
    out: str | Path,
    studies_dir: str | Path = DEFAULTS.studies_dir,
    storage: str | None = None,
    torch_format: str = DEFAULTS.torch_format,
    metric: Metric | None = None,
) -> Exported:
    """Rebuild ``trial``, re-measure it, and write ``out/config.yaml`` plus its artifact. ``metric``: the study's
    own function (``TuneResult.export`` passes it), scored again on the rebuilt model's logits."""
    from tuner.explain.profile import refuse
    from tuner.explain.trials import cached_profile, write_profile

    if torch_format not in ("export", "state_dict"):
        raise ConfigError(f"--torch-format must be export or state_dict, got {torch_format!r}.")
    out = Path(out)
    check_out(out)
    _remove_partials(out)
    again = rebuild_and_measure(study, trial, why, studies_dir, metric)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = owned_temp_dir(out.parent, _partial_prefix(out))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary directory
    try:
        kind, saved = save_model(again, tmp, torch_format)
        config = export_config(study, trial, why, storage, metric, again, kind, saved, tmp)
        readme = readme_text(config.to_dict())
        candidate = again.candidate
        if refuse(candidate.placement) is None:  # where its time goes: profile.json, the costliest layers
            readme += "\n" + "\n".join(write_profile(tmp, cached_profile(again.workload, again.built))) + "\n"
        (tmp / README_FILE).write_text(readme, encoding="utf-8")
        config.write(tmp / CONFIG_FILE)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, trial.number, saved.file, kind.name, config.to_dict())


def rebuild_and_measure(
    study: optuna.Study, trial: TrialRecord, why: str, studies_dir: str | Path, metric: Metric | None = None
) -> Remeasured:
    """``trial`` rebuilt through the study's workload and cached build steps, measured under the study's load,
    checked to score what the study measured, its held-out figures and how far its latency can be trusted."""
    from tuner.measure import measure
    from tuner.measure.load import replaying
    from tuner.passes.chain import build
    from tuner.runtimes.registry import check_supported
    from tuner.workload import load_workload

    kept = read_study(study)
    spec = WorkloadSpec.from_record(kept.workload, f"{studies_dir}/cache", f"study {study.study_name}")
    check_recorded_paths(spec, f"study {study.study_name}")
    candidate = trial.to_candidate()
    check_supported(candidate)  # a study from another machine may hold placements this one cannot run
    here, there = hardware.fingerprint(), trial.hardware or kept.fingerprint
    if there and hardware.fingerprint_id(there) != hardware.fingerprint_id(here):
        _log.info(
            "note: the study was measured on other hardware or libraries; this re-measure is what this machine does"
        )
    _log.info(f"rebuilding trial #{trial.number} ({why}): {candidate}")
    workload = load_workload(spec)
    built = build(workload, candidate)
    logits: list[np.ndarray] = []
    recorded = trial.metrics or {}
    metrics = measure(built, workload.data, keep_logits=logits, load=replaying(recorded)).to_dict()  # the study's load
    scored = (kept.metric or {}).get("code") is not None  # by a function of the user's
    references = kept.reference
    reference = references.get("accuracy")
    if scored and metric is not None and metric.custom:
        metrics = metric.rescore(metrics, np.concatenate(logits), np.asarray(workload.data.val.labels))
    elif scored:  # the function is not here (the command line): accuracy and its drop are top-1's
        _log.info(
            f"note: the study scores accuracy by its metric {(kept.metric or {}).get('name')}; this export "
            "re-measures top-1 (TuneResult.export scores the metric too)"
        )
        metrics["top1"], reference = metrics["accuracy"], references.get("top1")
    if reference is not None:
        metrics["accuracy_drop"] = drop_points(reference, metrics["accuracy"])
    check_rebuilt(top1_of(metrics), top1_of(recorded), len(workload.data.val), trial.number, spec.cache_dir)

    held_out = _holdout(workload, built)
    if held_out:
        _log.info(
            f"held-out split ({held_out['images']} images the search never saw): {held_out['accuracy']:.2%}, "
            f"{held_out['accuracy_drop']:.2f} points below the baseline's {held_out['reference_accuracy']:.2%} "
            f"(on the search's validation split: {metrics.get('accuracy_drop', 0.0):.2f} points); "
            + guard_words(held_out)
        )
    trust = latency_trust(metrics, recorded, kept.remeasure.get(trial.number))
    for note in trust["notes"]:
        _log.info(f"note: {note}")
    return Remeasured(
        kept, spec, workload, candidate, built, metrics, recorded, reference, scored, held_out, trust, here, there
    )


def save_model(again: Remeasured, directory: Path, torch_format: str) -> tuple[ExportKind, Saved]:
    """The model saved into ``directory`` by the first kind that serves it and saves it
    (``tuner.artifact.kinds.registry``)."""
    job = SaveJob(again.candidate, again.built, again.workload.data, again.spec, again.metrics, torch_format)
    for kind in registry.kinds():
        if kind.serves(job):
            saved = kind.save(job, directory)
            if saved is not None:
                return kind, saved
    raise TunerError(
        f"no export kind saves {again.candidate} (kinds: " + ", ".join(k.name for k in registry.kinds()) + ")."
    )


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


def check_rebuilt(now: float, recorded: float, n_val: int, number: int, cache_dir: str | None) -> None:
    """The rebuilt model must score what the study measured, within one validation image: a model that does not
    (its cached build steps were rebuilt otherwise, the code or libraries changed) is not the one the study chose,
    and is refused rather than exported under the study's figures."""
    if abs(now - recorded) > 1.0 / n_val + 1e-9:
        raise TunerError(
            f"the rebuilt trial #{number} scores {now:.2%} top-1 where the study measured {recorded:.2%} "
            f"(more than 1 of {n_val} validation images apart): its build under {cache_dir} is not the "
            "one the study chose; nothing exported: export another trial, or run the study again "
            "(--study NEW)."
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


def _holdout(workload: Any, built: Any) -> dict[str, Any] | None:
    """The exported point and the baseline scored on the held-out split: the drop there is the honest one (the
    study chose its pick on the validation split, so the pick's accuracy there is optimistic)."""
    from tuner.measure import holdout_accuracy
    from tuner.pipeline import reference_accuracy

    data = workload.data
    if data.holdout is None:
        return None
    mine, theirs = guardrails.Tally(), guardrails.Tally()  # the same passes' predictions: the guardrails there
    accuracy = holdout_accuracy(built, data, mine)
    reference = reference_accuracy(workload, data.holdout, tally=theirs)  # the torch module, or an ONNX file as given
    guards = guardrails.figures(mine.predictions(), theirs.predictions())
    worst = int(guards.pop("worst_class"))
    guards.pop("class_accuracy")
    guards.pop("flipped")  # indices into the held-out split: the report's thumbnails are the study's
    return {
        "images": len(data.holdout),
        "accuracy": accuracy,
        "reference_accuracy": reference,
        "accuracy_drop": drop_points(reference, accuracy),
        **guards,
        "worst_class": data.classes[worst] if worst >= 0 else None,
    }


def latency_trust(now: dict[str, Any], study: dict[str, Any], again: dict[str, Any] | None) -> dict[str, Any]:
    """How far the latency figures of this point can be trusted: whether the export timed it on a quiet host, and
    where the study's figure, its re-measure in fresh processes and the export's own disagree beyond the study's
    within-process 95% CI. ``range_ms`` (per batch), against which ``verify`` judges a new timing, spans what
    fresh processes measured (the re-measure's rounds and the export) where the study was re-timed: one process's
    figure, a contended outlier above all, would otherwise widen it to accept almost anything."""
    figures = {"study": float(study["latency_ms"]), "export": float(now["latency_ms"])}
    rounds = [float(x) for x in (again or {}).get("round_ms") or () if isinstance(x, (int, float))]
    if again and isinstance(again.get("median_ms"), (int, float)):
        figures["re-measure"] = float(again["median_ms"])
    fresh = [*rounds, figures["export"]] if rounds else list(figures.values())
    lo, hi = (float(x) for x in study.get("latency_ci_ms") or (figures["study"],) * 2)
    notes = []
    if not now.get("latency_quiet", True):
        notes.append("the export's timing never found the host quiet: its latency includes other tenants' load")
    if not study.get("latency_quiet", True):
        notes.append("the study timed this point on a contended host")
    outside = {k: v for k, v in figures.items() if k != "study" and not lo <= v <= hi}
    if outside:
        notes.append(
            f"outside the study's within-process 95% CI {lo:.4f}-{hi:.4f} ms/batch: "
            + ", ".join(f"{k} {v:.4f}" for k, v in outside.items())
            + f" (study {figures['study']:.4f}); one process's timing "
            "is one draw of this machine's speed"
        )
    if rounds and not min(fresh) <= figures["study"] <= max(fresh):
        notes.append(
            f"the study's own figure {figures['study']:.4f} ms/batch is outside what fresh processes measured "
            f"({min(fresh):.4f}-{max(fresh):.4f}): the acceptance range is theirs"
        )
    return {
        "quiet": bool(now.get("latency_quiet", True)),
        "figures_ms": figures,
        "range_ms": [min(fresh), max(fresh)],
        "notes": notes,
    }


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _remove_partials(out: Path) -> None:
    """The partial exports to ``out`` that killed exports (kill -9, a power cut) left beside it; a running export's
    is kept (``tuner.cache.remove_leftovers``)."""
    if out.parent.is_dir() and remove_leftovers(out.parent, re.escape(_partial_prefix(out)), PARTIAL_STALE_SECONDS):
        _log.info(f"removed the unfinished exports to {out} that interrupted runs left in {out.parent}")


def _move_into_place(tmp: Path, out: Path) -> None:
    """The new export's files into ``out``. A previous export alone there is swapped for the new one by two
    renames; one beside other files of the user's loses only the files an export writes (the artifact kinds and
    config.yaml, written last), and the rest stays."""
    if not out.is_dir() or not any(out.iterdir()):
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
        return
    if not is_export(out):  # checked again: something may have appeared while we built
        raise ConfigError(f"--out {out} is not empty and not a previous export; pass a new directory.")
    replaced = (*registry.model_files(), *EXPORT_FILES)
    if {p.name for p in out.iterdir()} <= set(replaced):
        aside = owned_temp_dir(out.parent, _partial_prefix(out))  # a kill in between leaves a partial: removed later
        os.replace(out, aside)
        os.replace(tmp, out)
        shutil.rmtree(aside, ignore_errors=True)
        return
    new = {p.name for p in tmp.iterdir()}
    for name in replaced:
        if name not in new:
            (out / name).unlink(missing_ok=True)
    for name in sorted(new, key=lambda n: n == CONFIG_FILE):  # config.yaml last: it marks the export complete
        os.replace(tmp / name, out / name)
    tmp.rmdir()
