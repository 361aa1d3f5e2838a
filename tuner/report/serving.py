"""The report's serving data, for studies measured under load (``tuner.measure.load``): each completed trial's
throughput against its p95 under the same load, the study's p95 budget (its constraint on that p95) and the point
that serves the most within it. Drawn by ``serving_figure.serving_figure``; computed here once, tested as data."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tuner.results import SPEED_UNDER_LOAD


@dataclass(frozen=True)
class ServingPoint:
    number: int
    throughput: float  # samples/s under the study's load
    p95_ms: float  # per request (one batch), under the same load
    feasible: bool
    pareto: bool
    baseline: bool
    params: dict[str, Any]  # the candidate: placement, precision, streams, requests, batch, threads


@dataclass(frozen=True)
class ServingInfo:
    throughput: str  # the study's throughput objective (open_throughput | load_throughput): the x axis
    p95: str  # the p95 of the same loop: the y axis
    budget_ms: float | None  # the study's constraint on that p95 (None: it has none)
    points: tuple[ServingPoint, ...]
    best: int | None  # the trial the study picks: the feasible one serving the most

    def within_budget(self) -> tuple[ServingPoint, ...]:
        return tuple(p for p in self.points if self.budget_ms is None or p.p95_ms <= self.budget_ms)


def budget_of(constraints: Iterable[str], metric: str) -> float | None:
    """The upper bound on ``metric`` among a study's constraints as recorded (``Constraint.__str__``: "m <= 20")."""
    for text in constraints:
        for part in str(text).split(" and "):
            found = re.fullmatch(rf"{re.escape(metric)} <= (\S+)", part.strip())
            if found:
                return float(found[1])
    return None


def serving_info(
    objectives: dict[str, str], constraints: Iterable[str], rows: Iterable[Any], best: int | None
) -> ServingInfo | None:
    """From the report's completed rows (``TrialRow``s); None unless the study ranks by a throughput under load."""
    speed = next((m for m in SPEED_UNDER_LOAD if m in objectives), None)
    if speed is None:
        return None
    p95 = SPEED_UNDER_LOAD[speed]
    points = tuple(
        ServingPoint(
            r.number, float(r.metrics[speed]), float(r.metrics[p95]), r.feasible, r.pareto, r.baseline, dict(r.params)
        )
        for r in rows
        if isinstance(r.metrics.get(speed), (int, float)) and isinstance(r.metrics.get(p95), (int, float))
    )
    return ServingInfo(speed, p95, budget_of(constraints, p95), points, best)
