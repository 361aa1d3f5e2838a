"""The one home of the rules about what a study found: the front, the feasible set, the fastest feasible pick
(by the re-measured figures where the study was re-timed) and its tie-break, the most accurate point within a
latency budget, speedups, per-sample CIs and candidate labels.

The summary, the report, export, the re-measure and the benchmarks all call these; none recomputes them.
The rules work on ``Point``s (what they need of a trial), so the report's designed tables and a live study
go through the very same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.study.storage import read_remeasure

EPS = 1e-12  # a drop "within 1 point" includes exactly 1 point despite float rounding


@dataclass(frozen=True)
class Point:
    """What the rules need of one completed trial."""

    number: int
    accuracy: float
    accuracy_drop: float  # vs the study's reference accuracy
    per_sample_ms: float  # the study's own timing
    feasible: bool  # meets every constraint of the study's objectives
    remeasured_ms: float | None = None  # the end-of-study re-measure in fresh processes (per sample), if any


@dataclass(frozen=True)
class Pick:
    point: Point  # the point chosen
    study_point: Point  # the fastest by the study's own timing (the same point unless the re-measure reordered)

    @property
    def by_remeasure(self) -> bool:
        return self.point.remeasured_ms is not None

    @property
    def reordered(self) -> bool:
        return self.point.number != self.study_point.number


# ---------------------------------------------------------------- reading a study


def is_feasible(t: FrozenTrial) -> bool:
    """Meets every constraint the trial recorded (Optuna's convention: each value <= 0)."""
    return all(v <= 0 for v in t.constraints.values())


def is_repeat(t: FrozenTrial) -> bool:
    """A trial that repeated an earlier candidate and reused its outcome."""
    return "duplicate_of" in t.user_attrs


def completed(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials that recorded their candidate and metrics."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if isinstance(t.user_attrs.get("metrics"), dict) and isinstance(t.user_attrs.get("candidate"), dict)]


def baseline_trial(study: optuna.Study) -> FrozenTrial | None:
    return next((t for t in completed(study) if t.user_attrs.get("baseline")), None)


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The study's Pareto front over its own objectives, feasible only where it has constraints
    (``study.best_trials``), each point once: a repeat has its original's values and is left out."""
    return [t for t in study.best_trials if not is_repeat(t)]


def points(study: optuna.Study) -> list[Point]:
    """Every completed trial as a Point, with its re-measured figure where the study was re-timed."""
    again = read_remeasure(study)
    out = []
    for t in completed(study):
        m = t.user_attrs["metrics"]
        ms = (again.get(t.number) or {}).get("per_sample_ms")
        out.append(Point(t.number, float(m["accuracy"]), float(m.get("accuracy_drop", 0.0)),
                         float(m["per_sample_ms"]), is_feasible(t), float(ms) if ms is not None else None))
    return out


# ---------------------------------------------------------------- the rules


def speed_order(per_sample_ms: float, accuracy: float, number: int) -> tuple[float, float, int]:
    """The tie-break of every "fastest": faster, then more accurate, then the earlier trial."""
    return per_sample_ms, -accuracy, number


def fastest_feasible(pts: Iterable[Point], max_drop: float | None = None) -> Pick | None:
    """The fastest feasible point (within ``max_drop``, a fraction, when given).

    Where the study's own pick was re-timed at the end of the study, the re-measured medians decide among the
    re-timed points: one process's timing can be a few percent off, the fresh processes' median less so."""
    ok = [p for p in pts if p.feasible and (max_drop is None or p.accuracy_drop <= max_drop + EPS)]
    if not ok:
        return None
    best = min(ok, key=lambda p: speed_order(p.per_sample_ms, p.accuracy, p.number))
    if best.remeasured_ms is None:
        return Pick(best, best)
    again = min((p for p in ok if p.remeasured_ms is not None),
                key=lambda p: speed_order(p.remeasured_ms or 0.0, p.accuracy, p.number))
    return Pick(again, best)


def most_accurate_within(pts: Iterable[Point], max_ms: float) -> Point | None:
    """The most accurate point at or under ``max_ms`` per sample (then the faster, then the earlier)."""
    ok = [p for p in pts if p.per_sample_ms <= max_ms]
    return min(ok, key=lambda p: (-p.accuracy, p.per_sample_ms, p.number), default=None)


def speedup(baseline_ms: float | None, ms: float | None) -> float | None:
    return baseline_ms / ms if baseline_ms and ms else None


def per_sample_ci(metrics: dict[str, Any]) -> tuple[float, float]:
    """The 95% CI of the per-sample median, from the per-batch CI a measurement records."""
    lo, hi = metrics.get("latency_ci_ms") or (metrics["latency_ms"],) * 2
    bs = metrics.get("batch_size") or 1
    return lo / bs, hi / bs


def label(c: dict[str, Any]) -> str:
    """A candidate in a few words: placement, precision, how it was compressed, batch."""
    shrink = f"prune {c.get('prune_ratio', 0):.2f}"
    if c.get("prune_ratio") and c.get("prune_profile", "uniform") != "uniform":
        shrink += f" {c['prune_profile']}"
    if c.get("drop_blocks"):
        shrink += f" -{c['drop_blocks']} blocks"
    if c.get("sparsity"):
        shrink += f" sparse {c['sparsity']:.2f}"
    if c.get("recovery") == "long":
        shrink += " (long recovery)"
    return f"{c.get('placement')} {c.get('precision')} {shrink} bs {c.get('batch_size')}"


def describe_trial(t: FrozenTrial) -> str:
    """One line per finished trial, for the progress output."""
    c = t.user_attrs.get("candidate", {})
    what = label(c) if c else ""
    if t.state == TrialState.COMPLETE and "metrics" in t.user_attrs:
        m = t.user_attrs["metrics"]
        return f"#{t.number} {what}: {m['accuracy']:.2%}, {m['per_sample_ms']:.3f} ms/sample"
    reason = t.user_attrs.get("error") or t.system_attrs.get("fail_reason", "")
    return f"#{t.number} {what}: {t.state.name.lower()} ({str(reason).splitlines()[0][:120] if reason else ''})"
