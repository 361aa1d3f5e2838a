"""One trial's work, Optuna-free: build the candidate, measure it, return plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.workload import Workload


@dataclass(frozen=True)
class Evaluation:
    candidate: dict[str, Any]
    metrics: dict[str, Any]  # tuner.measure.Metrics as a dict
    build_seconds: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0


def evaluate(workload: Workload, candidate: Candidate, min_accuracy: float | None = None,
             load: bool = False) -> Evaluation:
    """``load``: measure it under load too (the study's objectives use a load metric)."""
    from tuner.build import build  # torch and the runtimes load in the trial's process, not its parent's
    from tuner.measure import LoadPolicy, measure

    hits, misses = workload.cache.hits, workload.cache.misses
    built = build(workload, candidate)
    metrics = measure(built, workload.data, min_accuracy=min_accuracy, load=LoadPolicy() if load else None)
    return Evaluation(candidate.to_dict(), metrics.to_dict(), built.seconds,
                      workload.cache.hits - hits, workload.cache.misses - misses)
