"""The one home of the rules about what a study found: the front, the feasible set, the fastest feasible pick
(by the re-measured figures where the study was re-timed) and its tie-break, the most accurate point within a
latency budget, speedups (by the study's speed figure) and per-sample CIs.

The summary, the report, export, the API, the re-measure and the benchmarks all call these; none recomputes them.
Trials are read as ``tuner.record.TrialRecord``s; the rules work on ``Point``s (what they need of a trial), so the
report's designed tables and a live study go through the very same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.candidate import label
from tuner.errors import first_line
from tuner.record import TrialRecord, read_remeasure, read_trial, read_trials

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


def is_feasible(r: TrialRecord) -> bool:
    """Meets every constraint the trial recorded (Optuna's convention: each value <= 0)."""
    return all(v <= 0 for v in r.constraints.values())


def completed(study: optuna.Study) -> list[TrialRecord]:
    """Completed trials that recorded their candidate and metrics."""
    return [r for r in read_trials(study, (TrialState.COMPLETE,)) if r.complete]


def baseline_trial(study: optuna.Study) -> TrialRecord | None:
    return next((r for r in completed(study) if r.baseline), None)


def front(study: optuna.Study) -> list[TrialRecord]:
    """The study's Pareto front over its own objectives, feasible only where it has constraints
    (``study.best_trials``), each point once: a repeat has its original's values and is left out."""
    return [r for r in map(read_trial, study.best_trials) if not r.repeat]


# Throughput objectives under load (tuner.names.LOAD_METRICS), in the order they decide a study's speed, each
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
    for r in completed(study):
        m = r.metrics or {}
        ms, re = cost_ms(m, speed), remeasured_cost_ms(again.get(r.number), speed)
        if ms is None:
            continue  # a study under load whose trial recorded no load figure (none should)
        out.append(
            Point(
                r.number,
                float(m["accuracy"]),
                float(m.get("accuracy_drop", 0.0)),
                float(ms),
                is_feasible(r),
                float(re) if re is not None else None,
            )
        )
    return out


# ---------------------------------------------------------------- the rules


def speed_order(per_sample_ms: float, accuracy: float, number: int) -> tuple[float, float, int]:
    """The tie-break of every "fastest": faster, then more accurate, then the earlier trial."""
    return per_sample_ms, -accuracy, number


def fastest_feasible(pts: Iterable[Point], max_drop: float | None = None) -> Pick | None:
    """The fastest feasible point (within ``max_drop`` percentage points, when given).

    Where the study's own pick was re-timed at the end of the study, the re-measured medians decide among the
    re-timed points: one process's timing can be a few percent off, the fresh processes' median less so."""
    ok = [p for p in pts if p.feasible and (max_drop is None or p.accuracy_drop <= max_drop + EPS)]
    if not ok:
        return None
    best = min(ok, key=lambda p: speed_order(p.per_sample_ms, p.accuracy, p.number))
    if best.remeasured_ms is None:
        return Pick(best, best)
    again = min(
        (p for p in ok if p.remeasured_ms is not None),
        key=lambda p: speed_order(p.remeasured_ms or 0.0, p.accuracy, p.number),
    )
    return Pick(again, best)


def most_accurate_within(pts: Iterable[Point], max_ms: float) -> Point | None:
    """The most accurate feasible point at or under ``max_ms`` per sample (then the faster, then the earlier): a
    point that breaks a constraint of the study (a guardrail, an accuracy floor) is never picked."""
    ok = [p for p in pts if p.feasible and p.per_sample_ms <= max_ms]
    return min(ok, key=lambda p: (-p.accuracy, p.per_sample_ms, p.number), default=None)


def speedup(baseline_ms: float | None, ms: float | None) -> float | None:
    return baseline_ms / ms if baseline_ms and ms else None


def speedup_over(
    base: TrialRecord | None, r: TrialRecord, speed: str | None, remeasured: dict[int, dict[str, Any]]
) -> float | None:
    """``r``'s speedup over the baseline by the study's speed figure (``cost_ms``: per-sample latency, or in a study
    under load its throughput objective): the one figure the summary, the report, the tables and the API show.

    Where the end-of-study re-measure timed both (``remeasured``: ``read_remeasure``), their fresh processes'
    medians decide: they were timed in the same interleaved rounds, where the study timed each once, in its own
    process and host state (a baseline timed on a busy host made "5780x"). Elsewhere the study's own figures."""
    if base is None or base.metrics is None or r.metrics is None:
        return None
    again = (
        remeasured_cost_ms(remeasured.get(base.number), speed),
        remeasured_cost_ms(remeasured.get(r.number), speed),
    )
    if again[0] is not None and again[1] is not None:
        return speedup(*again)
    return speedup(cost_ms(base.metrics, speed), cost_ms(r.metrics, speed))


def trusted_ms(metrics: dict[str, Any], again: dict[str, Any] | None) -> tuple[float, float, float, bool]:
    """(per-sample ms, low, high, from fresh processes): the re-measure's median and the range of its rounds where
    this point was re-timed, else the study's own median with its within-process 95% CI. The within-process CI
    says how steady one process was; fresh processes fall outside it most of the time, so it is never shown as
    the figure's uncertainty where the spread between processes is known."""
    if again and isinstance(again.get("per_sample_ms"), (int, float)):
        bs = (again.get("candidate") or {}).get("batch_size") or metrics.get("batch_size") or 1
        rounds = [x / bs for x in again.get("round_ms") or () if isinstance(x, (int, float))]
        median = float(again["per_sample_ms"])
        return median, min([median, *rounds]), max([median, *rounds]), True
    lo, hi = per_sample_ci(metrics)
    return float(metrics["per_sample_ms"]), lo, hi, False


def per_sample_ci(metrics: dict[str, Any]) -> tuple[float, float]:
    """The 95% CI of the per-sample median, from the per-batch CI a measurement records."""
    lo, hi = metrics.get("latency_ci_ms") or (metrics["latency_ms"],) * 2
    bs = metrics.get("batch_size") or 1
    return lo / bs, hi / bs


def describe_trial(r: TrialRecord) -> str:
    """One line per finished trial, for the progress output."""
    what = label(r.candidate) if r.candidate else ""
    if r.state == "complete" and r.metrics is not None:
        m = r.metrics
        served = (
            f"; under load {m['load_throughput']:.0f} samples/s (p95 {m['load_p95_ms']:.3f} ms), open loop "
            f"{m['open_throughput']:.0f} (p95 {m['open_p95_ms']:.3f} ms)"
            if m.get("load")
            else ""
        )
        return f"#{r.number} {what}: {m['accuracy']:.2%}, {m['per_sample_ms']:.3f} ms/sample{served}"
    return f"#{r.number} {what}: {r.state} ({first_line(r.error, 240)})"
