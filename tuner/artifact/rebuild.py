"""A study's trial rebuilt through its workload and cached build steps and measured again here (``Remeasured``):
checked to score what the study measured, scored on the held-out split, and how far its latency can be trusted
(``latency_trust``, which verify judges a new timing by)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from tuner import guardrails, hardware
from tuner.candidate import Candidate
from tuner.errors import TunerError
from tuner.metric import Metric, drop_points, top1_of
from tuner.record import StudyRecord, TrialRecord, read_study
from tuner.summary import guard_words
from tuner.workload_spec import WorkloadSpec, check_recorded_paths

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tuner.passes.chain import Built
    from tuner.workload import Workload


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
