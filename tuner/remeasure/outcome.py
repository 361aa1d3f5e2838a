"""What a re-measure found: ``RemeasureEntry`` per trial (its rounds against the study's figure and 95% CI, and
under load), ``RemeasureSummary`` over the Pareto points, and how one trial's rounds become its entry."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tuner.names import LOAD_METRICS
from tuner.record import TrialRecord

WITHIN = 0.05  # "agrees" = the re-measured median is within 5% of the study's
LOAD_WITHIN = 0.10  # a figure under load "agrees" within 10%: a p95 over a few thousand requests moves more


@dataclass(frozen=True)
class RemeasureEntry:
    """One trial re-measured; latencies are per batch (``*_per_sample_ms`` divide by the batch size)."""

    number: int
    baseline: bool
    pareto: bool
    candidate: dict[str, Any]
    study_ms: float  # the study's median per batch
    study_ci_ms: tuple[float, float]  # the study's 95% CI of that median
    round_ms: tuple[float, ...] = ()  # this run: the median of each round, in order (contended ones run again)
    median_ms: float | None = None  # median of the quiet rounds' medians (of all rounds where none was quiet)
    min_ms: float | None = None  # min / max across those rounds
    max_ms: float | None = None
    rel_diff: float | None = None  # (median_ms - study_ms) / study_ms
    outside_ci: bool | None = None  # the re-measured median is outside the study's 95% CI
    within_5pct: bool | None = None
    error: str | None = None  # why this trial could not be re-measured
    study_quiet: bool = True  # False: the study's figure was timed on a contended host (tuner.measure.host)
    contended_rounds: int = 0  # rounds behind median_ms that found no quiet period (figures include contention)
    rounds_used: int = 0  # rounds behind median_ms: the quiet ones, or all where none was quiet
    # Studies under load: per load metric {"study", "rounds" (one per round), "median", "rel_diff", "within_10pct"},
    # each round under the load the study applied (``tuner.measure.load.replaying``: the same rule, fresh figures).
    load: dict[str, dict[str, Any]] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.candidate.get("batch_size", 1))

    @property
    def study_per_sample_ms(self) -> float:
        return self.study_ms / self.batch_size

    @property
    def per_sample_ms(self) -> float | None:
        return None if self.median_ms is None else self.median_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["study_ci_ms"] = list(self.study_ci_ms)
        d["round_ms"] = list(self.round_ms)
        d["per_sample_ms"] = self.per_sample_ms
        d["study_per_sample_ms"] = self.study_per_sample_ms
        return d


@dataclass(frozen=True)
class RemeasureSummary:
    rounds: int
    entries: tuple[RemeasureEntry, ...]  # by trial number
    fraction_within_5pct: float | None  # over the distinct Pareto points re-measured; None when none was
    hardware_matches: bool  # False: the study ran on other hardware, the comparison means little
    seconds: float  # wall time of the whole re-measurement

    @property
    def measured(self) -> tuple[RemeasureEntry, ...]:
        """The points re-measured: one entry per distinct candidate (a duplicate trial repeats its figures)."""
        return tuple(group[0] for group in self._points())

    @property
    def pareto_points(self) -> tuple[RemeasureEntry, ...]:
        """The measured points on the Pareto front: what the agreement figures are about. The baseline is
        re-timed for the speedups; it counts here only where it is on the front itself."""
        return tuple(group[0] for group in self._points() if any(e.pareto for e in group))

    def _points(self) -> list[list[RemeasureEntry]]:
        groups: dict[str, list[RemeasureEntry]] = {}
        for e in self.entries:
            if e.median_ms is not None:
                groups.setdefault(json.dumps(e.candidate, sort_keys=True), []).append(e)
        return list(groups.values())

    @property
    def fraction_outside_ci(self) -> float | None:
        m = self.pareto_points
        return sum(bool(e.outside_ci) for e in m) / len(m) if m else None

    @property
    def quiet(self) -> tuple[RemeasureEntry, ...]:
        """The Pareto points whose figures both come from quiet timings (the study's, and the rounds used)."""
        return tuple(e for e in self.pareto_points if e.study_quiet and not e.contended_rounds)

    @property
    def fraction_within_5pct_quiet(self) -> float | None:
        q = self.quiet
        return sum(bool(e.within_5pct) for e in q) / len(q) if q else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "fraction_within_5pct": self.fraction_within_5pct,
            "fraction_outside_ci": self.fraction_outside_ci,
            "pareto_points": len(self.pareto_points),
            "quiet_points": len(self.quiet),
            "fraction_within_5pct_quiet": self.fraction_within_5pct_quiet,
            "hardware_matches": self.hardware_matches,
            "seconds": self.seconds,
            "trials": {str(e.number): e.to_dict() for e in self.entries},
        }


def entry_from_rounds(
    t: TrialRecord, pareto: bool, round_ms: list[float], contended: list[bool], error: str | None
) -> RemeasureEntry:
    m = t.metrics or {}
    study_ms = float(m["latency_ms"])
    lo, hi = (float(x) for x in m.get("latency_ci_ms", (study_ms, study_ms)))
    base = dict(
        number=t.number,
        baseline=t.baseline,
        pareto=pareto,
        candidate=dict(t.candidate or {}),
        study_ms=study_ms,
        study_ci_ms=(lo, hi),
        round_ms=tuple(round_ms),
        study_quiet=bool(m.get("latency_quiet", True)),
    )
    if not round_ms:
        return RemeasureEntry(**base, error=error or "not measured")
    quiet = [ms for ms, busy in zip(round_ms, contended) if not busy]
    used = quiet or round_ms  # the quiet rounds; all of them where none was quiet
    median = _median(used)
    rel = (median - study_ms) / study_ms
    return RemeasureEntry(
        **base,
        median_ms=median,
        min_ms=min(used),
        max_ms=max(used),
        rel_diff=rel,
        rounds_used=len(used),
        contended_rounds=0 if quiet else len(used),
        outside_ci=not lo <= median <= hi,
        within_5pct=abs(rel) <= WITHIN,
        error=error,
    )  # an error after some rounds: the figures cover the rounds that ran


def load_from_rounds(t: TrialRecord, rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Per load metric: the study's figure, each round's, their median and how far it is from the study's."""
    m = t.metrics or {}
    if not rounds or not isinstance(m.get("load"), dict):
        return None
    out = {}
    for metric in LOAD_METRICS:
        study, values = float(m[metric]), [float(r[metric]) for r in rounds]
        median = _median(values)
        rel = (median - study) / study if study else 0.0
        out[metric] = {
            "study": study,
            "rounds": values,
            "median": median,
            "rel_diff": rel,
            "within_10pct": abs(rel) <= LOAD_WITHIN,
        }
    out["host"] = {"contended_rounds": sum(not r["quiet"] for r in rounds), "rounds": len(rounds)}
    return out


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
