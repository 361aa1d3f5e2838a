"""Objectives: which metrics the study optimizes (with direction) and which are constraints."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.candidate import read_yaml
from tuner.errors import ConfigError
from tuner.guardrails import BOUNDED_METRICS, GUARD_METRICS
from tuner.metric import check_drop_budget
from tuner.names import LOAD_METRICS

OBJECTIVES_DIR = Path(__file__).resolve().parent.parent / "objectives"
# Every metric a trial reports that can be optimized or constrained (see tuner.measure.Metrics); accuracy_drop is in
# percentage points (tuner.metric.DROP_UNIT), accuracy in the metric's own units (0..1 for top-1).
# The load metrics are measured (tuner.measure.load) only in studies whose objectives or constraints use one; the
# guardrails (tuner.guardrails: worst_class_drop in points, the rest shares of 0..1) in every trial.
METRICS = (
    "accuracy",
    "accuracy_drop",
    "latency_ms",
    "latency_p95_ms",
    "per_sample_ms",
    "throughput",
    "params",
    "macs",
    "size_mb",
    "compressed_mb",
    *LOAD_METRICS,
    *GUARD_METRICS,
    "corruption_drop",
)
# corruption_drop: the baseline's top-1 on the corruption set (tuner.corruptions) minus the trial's, in points;
# measured only in studies whose objectives use it or that ask for it (--corruptions).
DROPS = ("accuracy_drop", "worst_class_drop", "corruption_drop")  # in percentage points (tuner.names.DROP_UNIT)
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Constraint:
    metric: str
    max: float | None = None
    min: float | None = None

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 is feasible, > 0 is by how much it is violated."""
        value = metrics[self.metric]
        over = value - self.max if self.max is not None else float("-inf")
        under = self.min - value if self.min is not None else float("-inf")
        return max(over, under)

    def __str__(self) -> str:
        parts = ([f"{self.metric} <= {self.max:g}"] if self.max is not None else []) + (
            [f"{self.metric} >= {self.min:g}"] if self.min is not None else []
        )
        return " and ".join(parts)

    @property
    def words(self) -> str:
        """As the screen states it: ``str()`` with the unit where it is not the metric's own (a drop's points)."""
        return f"{self} (points)" if self.metric in DROPS else str(self)

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """The constraint ``str()`` wrote (``accuracy_drop <= 1``, ``m <= a and m >= b``): how a stored study
        says what it was constrained by."""
        bounds: dict[str, float] = {}
        metric = ""
        for part in text.split(" and "):
            name, op, value = part.split()
            metric = name
            bounds["max" if op == "<=" else "min"] = float(value)
        return cls(metric, bounds.get("max"), bounds.get("min"))


@dataclass(frozen=True)
class Objectives:
    source: str
    names: tuple[str, ...]
    directions: tuple[str, ...]
    constraints: tuple[Constraint, ...]

    def values(self, metrics: dict[str, float]) -> list[float]:
        return [float(metrics[n]) for n in self.names]

    def min_accuracy(self, reference_accuracy: float) -> float | None:
        """The lowest accuracy any feasible trial can have, from the accuracy constraints (None: no bound)."""
        bounds = [c.min for c in self.constraints if c.metric == "accuracy" and c.min is not None]
        bounds += [
            reference_accuracy - c.max / 100
            for c in self.constraints
            if c.metric == "accuracy_drop" and c.max is not None
        ]
        return max(bounds) if bounds else None

    def min_corruption(self, reference_corruption: float | None) -> float | None:
        """The lowest top-1 on the corruption set any feasible trial can have (None: no bound): errors there only
        accumulate, so a trial below it stops early (``tuner.measure.robustness``)."""
        bounds = [
            reference_corruption - c.max / 100
            for c in self.constraints
            if c.metric == "corruption_drop" and c.max is not None and reference_corruption is not None
        ]
        return max(bounds) if bounds else None

    @property
    def uses_corruption(self) -> bool:
        """Whether every trial must be scored on the corruption set (an objective or constraint is corruption_drop)."""
        return "corruption_drop" in (*self.names, *(c.metric for c in self.constraints))

    def guard_limits(self) -> dict[str, float]:
        """The ``max`` of each guardrail constraint whose partial count bounds the whole: a trial bound to break
        one stops early (``tuner.guardrails.Tally``). ECE and its increase never stop a trial early."""
        return {c.metric: c.max for c in self.constraints if c.metric in BOUNDED_METRICS and c.max is not None}

    @property
    def uses_load(self) -> bool:
        """Whether a trial must be measured under load (an objective or constraint is a load metric)."""
        return any(m in LOAD_METRICS for m in (*self.names, *(c.metric for c in self.constraints)))

    def feasible(self, metrics: dict[str, float]) -> bool:
        return all(c.violation(metrics) <= 0 for c in self.constraints)


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.parent != Path("."):
        return p
    return OBJECTIVES_DIR / f"{name_or_path}.yaml"


def load_objectives(source: str | dict[str, Any]) -> Objectives:
    """A name in objectives/, a YAML path, or the mapping such a file holds (``tuner.tune(objectives={...})``)."""
    path, raw = (
        (Path("objectives"), source) if isinstance(source, dict) else (resolve(source), read_yaml(resolve(source)))
    )
    if not isinstance(raw, dict) or set(raw) - {"objectives", "constraints"}:
        raise ConfigError(
            f"{path}: expected the keys `objectives` (metric: maximize|minimize) and "
            "optionally `constraints` (metric: {max: X} or {min: X})."
        )
    objectives = raw.get("objectives")
    if not isinstance(objectives, dict) or not objectives:
        raise ConfigError(f"{path}: objectives must map one or more metrics to maximize or minimize.")
    for metric, direction in objectives.items():
        _check_metric(path, "objectives", metric)
        if direction not in DIRECTIONS:
            raise ConfigError(f"{path}: objectives: {metric} must be maximize or minimize, got {direction!r}.")
    constraints = []
    if not isinstance(raw.get("constraints") or {}, dict):
        raise ConfigError(
            f"{path}: constraints must map metrics to {{max: NUMBER}} and/or {{min: NUMBER}}, "
            f"got a {type(raw['constraints']).__name__}."
        )
    for metric, bound in (raw.get("constraints") or {}).items():
        _check_metric(path, "constraints", metric)
        if (
            not isinstance(bound, dict)
            or not bound
            or set(bound) - {"max", "min"}
            or not all(_is_number(v) for v in bound.values())
        ):
            raise ConfigError(
                f"{path}: constraints: {metric} must be {{max: NUMBER}} and/or {{min: NUMBER}} with "
                f"finite numbers, got {bound!r}."
            )
        if "max" in bound and "min" in bound and bound["min"] > bound["max"]:
            raise ConfigError(
                f"{path}: constraints: {metric} has min {bound['min']} > max {bound['max']}; no trial "
                "could be feasible: swap them."
            )
        if metric in DROPS:
            for side, value in bound.items():
                check_drop_budget(value, f"{path}: constraints: {metric} {side}")
        constraints.append(Constraint(metric, bound.get("max"), bound.get("min")))
    return Objectives(str(path), tuple(objectives), tuple(objectives.values()), tuple(constraints))


def _check_metric(path: Path, section: str, metric: Any) -> None:
    if metric not in METRICS:
        raise ConfigError(f"{path}: {section}: unknown metric {metric!r}; allowed: {', '.join(METRICS)}.")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
