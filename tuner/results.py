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
    per_sample_ms: float  # the study's own speed figure per sample (``cost_ms``)
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


# Throughput objectives under load (tuner.objectives.LOAD_METRICS), in the order they decide a study's speed, each
# with the p95 of the same loop.
SPEED_UNDER_LOAD = {"open_throughput": "open_p95_ms", "load_throughput": "load_p95_ms"}


def speed_metric(study: optuna.Study) -> str | None:
    """The throughput objective under load a study ranks its points by; None: it ranks by per-sample latency."""
    return next((m for m in SPEED_UNDER_LOAD if m in (study.metric_names or ())), None)


def cost_ms(metrics: dict[str, Any], speed: str | None = None) -> float | None:
    """A trial's speed as milliseconds per sample: its per-sample latency, or in a study under load the time the
    server spends per sample (1000 / the throughput objective), so that one rule ranks both ("fastest")."""
    if speed is None:
        return metrics.get("per_sample_ms")
    value = metrics.get(speed)
    return 1000.0 / value if isinstance(value, (int, float)) and value > 0 else None


def remeasured_cost_ms(entry: dict[str, Any] | None, speed: str | None) -> float | None:
    """``cost_ms`` by the end-of-study re-measure (``RemeasureEntry.to_dict()``): its median of the rounds."""
    if not entry:
        return None
    if speed is None:
        return entry.get("per_sample_ms")
    median = ((entry.get("load") or {}).get(speed) or {}).get("median")
    return 1000.0 / median if isinstance(median, (int, float)) and median > 0 else None


def points(study: optuna.Study) -> list[Point]:
    """Every completed trial as a Point, with its re-measured figure where the study was re-timed. In a study under
    load the figures are ``cost_ms`` of its throughput objective."""
    again = read_remeasure(study)
    speed = speed_metric(study)
    out = []
    for t in completed(study):
        m = t.user_attrs["metrics"]
        ms, re = cost_ms(m, speed), remeasured_cost_ms(again.get(t.number), speed)
        if ms is None:
            continue  # a study under load whose trial recorded no load figure (none should)
        out.append(Point(t.number, float(m["accuracy"]), float(m.get("accuracy_drop", 0.0)), float(ms),
                         is_feasible(t), float(re) if re is not None else None))
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
    """A candidate in a few words: placement, precision, how it was compressed, batch (and its streams, when several)."""
    shrink = ("student " if c.get("student") else "") + f"prune {c.get('prune_ratio', 0):.2f}"
    if c.get("prune_ratio") and c.get("prune_profile", "uniform") != "uniform":
        shrink += f" {c['prune_profile']}"
    if c.get("drop_blocks"):
        shrink += f" -{c['drop_blocks']} blocks"
    if c.get("sparsity"):
        shrink += f" sparse {c['sparsity']:.2f}"
    if c.get("recovery") == "long":
        shrink += " (long recovery)"
    streams = int(c.get("streams") or 1)
    return (f"{c.get('placement')} {c.get('precision')} {shrink} bs {c.get('batch_size')}"
            + (f" x{streams} streams" if streams > 1 else ""))


def describe_trial(t: FrozenTrial) -> str:
    """One line per finished trial, for the progress output."""
    c = t.user_attrs.get("candidate", {})
    what = label(c) if c else ""
    if t.state == TrialState.COMPLETE and "metrics" in t.user_attrs:
        m = t.user_attrs["metrics"]
        served = (f"; under load {m['load_throughput']:.0f} samples/s (p95 {m['load_p95_ms']:.3f} ms), open loop "
                  f"{m['open_throughput']:.0f} (p95 {m['open_p95_ms']:.3f} ms)" if m.get("load") else "")
        return f"#{t.number} {what}: {m['accuracy']:.2%}, {m['per_sample_ms']:.3f} ms/sample{served}"
    reason = t.user_attrs.get("error") or t.system_attrs.get("fail_reason", "")
    return f"#{t.number} {what}: {t.state.name.lower()} ({str(reason).splitlines()[0][:120] if reason else ''})"
