"""The report's data, computed once from a study (as ``optuna.visualization`` computes an info object before
drawing): the trial table, the study's own front, the hypervolume history, parameter importances, findings."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import optuna

from tuner import results
from tuner.candidate import label
from tuner.errors import first_line, one_line
from tuner.metric import chance_warning, metric_words
from tuner.record import read_study, read_trials
from tuner.report.serving import ServingInfo, serving_info

PARAMS = (
    "placement",
    "precision",
    "prune_ratio",
    "batch_size",
    "fold_bn",
    "graph_opt",
    "threads",
    "streams",
    "requests",
    "calibration",
    "calibration_images",
    "float_layers",
    "int8_ops",
)


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # complete | pruned | fail | running | waiting
    params: dict[str, Any]  # the candidate
    metrics: dict[str, Any]  # tuner.measure.Metrics + accuracy_drop ({} unless complete)
    feasible: bool
    pareto: bool  # on the study's own front (results.front)
    baseline: bool
    speedup: float | None  # baseline per-sample latency / this one (in a study under load: its throughput's ratio)
    duplicate_of: int | None  # the earlier trial whose figures it reused
    note: str  # why it failed or was refused
    remeasure: dict[str, Any] | None = (
        None  # the end-of-study re-measure (tuner.remeasure.outcome.RemeasureEntry.to_dict())
    )
    short_recovery: dict[str, Any] | None = None  # promoted to the long recovery: what the short one had reached
    speed: str | None = None  # a study under load: the throughput objective it ranks by (results.speed_metric)

    @property
    def complete(self) -> bool:
        return self.state == "complete" and "per_sample_ms" in self.metrics

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    @property
    def ms(self) -> float:
        return float(self.metrics["per_sample_ms"])

    @property
    def ms_ci(self) -> tuple[float, float]:
        """95% CI of the per-sample median."""
        return results.per_sample_ci(
            {**self.metrics, "batch_size": self.params.get("batch_size") or self.metrics.get("batch_size")}
        )

    @property
    def remeasured_ms(self) -> float | None:
        """The re-measured per-sample median (fresh processes, interleaved rounds), where there is one."""
        value = (self.remeasure or {}).get("per_sample_ms")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def remeasured_diff(self) -> float:
        """(re-measured - study) / study; 0 where not re-measured."""
        return float((self.remeasure or {}).get("rel_diff") or 0.0)

    @property
    def point(self) -> results.Point:
        """As the study's rules see it: by per-sample latency, or in a study under load by its throughput."""
        cost = results.cost_ms(self.metrics, self.speed) if self.speed else self.ms
        again = results.remeasured_cost_ms(self.remeasure, self.speed) if self.speed else self.remeasured_ms
        return results.Point(
            self.number,
            self.accuracy,
            float(self.metrics.get("accuracy_drop", 0.0)),
            cost if cost is not None else self.ms,
            self.feasible,
            again,
        )

    def label(self) -> str:
        return f"#{self.number} {label(self.params)}"


@dataclass(frozen=True)
class ReportInfo:
    study: str
    objectives: dict[str, str]  # metric -> maximize | minimize
    reference_accuracy: float | None
    validation_images: int | None
    hardware: dict[str, Any]
    workload: dict[str, Any]
    trials: list[TrialRow]
    pareto: list[int]  # the study's front, by its second objective (per-sample latency by default)
    baseline: int | None
    hypervolume: list[tuple[int, float]]  # (trial number, hypervolume of the front so far)
    hypervolume_reference: tuple[float, float] | None  # in the two objectives' units
    importances: dict[str, dict[str, float]]  # objective -> param -> importance
    importance_notes: list[str]
    findings: list[str]
    states: dict[str, int] = field(default_factory=dict)
    serving: ServingInfo | None = None  # a study under load: throughput vs p95 and the budget
    reference_warning: str | None = None  # the reference model near chance (tuner.metric.chance_warning)
    metric: str = "top-1 accuracy"  # what the study calls accuracy, in words: top-1, or the user's metric by name
    layers: dict[str, Any] | None = None  # the last `tuner explain` (Comparison.to_record()): the layer view
    constraints: tuple[str, ...] = ()  # the study's constraints in words (Constraint.parse reads them)
    # the reference's per-class top-1, ECE and class names (tuner.guardrails; {} in a study made before them)
    reference_guardrails: dict[str, Any] = field(default_factory=dict)
    # the pick's flipped images as thumbnails (tuner.report.thumbnails.Thumb), or why they cannot be shown
    flips: list[Any] = field(default_factory=list)
    flips_note: str | None = None

    @property
    def completed(self) -> list[TrialRow]:
        return [r for r in self.trials if r.complete]

    def row(self, number: int) -> TrialRow:
        return next(r for r in self.trials if r.number == number)

    @property
    def axes(self) -> tuple[str, str]:
        """(x, y) metrics of the front's plot: the study's two objectives (second on x), else ms vs accuracy."""
        names = list(self.objectives)
        return (names[1], names[0]) if len(names) == 2 else ("per_sample_ms", "accuracy")


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial of the study as a row, with the rules of ``tuner.results`` applied (front, feasible, speedup)."""
    remeasured = read_study(study).remeasure
    base = results.baseline_trial(study)
    speed = results.speed_metric(study)
    front = {t.number for t in results.front(study)}
    rows = []
    for t in read_trials(study):
        metrics = dict(t.metrics or {})
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state,
                params=t.filled,
                metrics=metrics,
                feasible=results.is_feasible(t) and bool(metrics),
                pareto=t.number in front,
                baseline=t.baseline,
                speedup=results.speedup_over(base, t, speed, remeasured) if metrics else None,
                duplicate_of=t.duplicate_of,
                remeasure=remeasured.get(t.number),
                short_recovery=t.short_recovery,
                speed=speed,
                note=first_line(t.error, 200),
            )
        )
    return rows


def collect(study: optuna.Study) -> ReportInfo:
    """Everything the report shows, but the findings (``tuner.report.findings`` reads this info)."""
    kept = read_study(study)
    base = results.baseline_trial(study)
    front = {t.number for t in results.front(study)}
    rows = trial_rows(study)
    reference = kept.reference
    objectives = dict(
        zip(
            study.metric_names or [f"objective {i}" for i in range(len(study.directions))],
            (d.name.lower() for d in study.directions),
        )
    )
    info = ReportInfo(
        study=study.study_name,
        objectives=objectives,
        reference_accuracy=reference.get("accuracy"),
        validation_images=reference.get("validation_images"),
        hardware=kept.fingerprint or {},
        workload=kept.workload or {},
        trials=rows,
        pareto=[],
        baseline=base.number if base is not None else None,
        hypervolume=[],
        hypervolume_reference=None,
        importances={},
        importance_notes=[],
        findings=[],
        states=dict(Counter(r.state for r in rows)),
        reference_warning=chance_warning(reference) if {"num_classes", "validation_images"} <= set(reference) else None,
        metric=metric_words(kept.metric),
        constraints=kept.constraints,
        reference_guardrails=dict(reference.get("guardrails") or {}),
        layers=kept.explain if kept.explain and any(r.number == kept.explain.get("trial") for r in rows) else None,
    )
    x, _ = info.axes
    hv, hv_ref = _hypervolume_history(info)
    importances, notes = _importances(study, rows)
    pick = results.fastest_feasible(r.point for r in info.completed)
    serving = serving_info(objectives, list(kept.constraints), info.completed, pick.point.number if pick else None)
    return replace(
        info,
        pareto=sorted(front, key=lambda n: (float(info.row(n).metrics.get(x, 0.0)), n)),
        hypervolume=hv,
        hypervolume_reference=hv_ref,
        importances=importances,
        importance_notes=notes,
        serving=serving,
    )


def group_by(rows: Iterable[TrialRow], key: Callable[[TrialRow], Any]) -> dict[Any, list[TrialRow]]:
    out: dict[Any, list[TrialRow]] = defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return out


def hypervolume(points: Iterable[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (x, y) points, both minimized, up to the reference point ``ref``."""
    pts = sorted({(x, y) for x, y in points if x < ref[0] and y < ref[1]})
    area, ceiling = 0.0, ref[1]
    for x, y in pts:  # by x ascending: each point adds the strip below the lowest y seen so far
        if y < ceiling:
            area += (ref[0] - x) * (ceiling - y)
            ceiling = y
    return area


def _hypervolume_history(info: ReportInfo) -> tuple[list[tuple[int, float]], tuple[float, float] | None]:
    """Hypervolume of the feasible points so far, over the plot's two metrics in the study's directions."""
    done = [r for r in info.completed if all(isinstance(r.metrics.get(m), (int, float)) for m in info.axes)]
    if not done:
        return [], None
    signs = [
        -1.0 if info.objectives.get(m) == "maximize" or (m == "accuracy" and m not in info.objectives) else 1.0
        for m in info.axes
    ]

    def as_min(r: TrialRow) -> tuple[float, float]:
        return signs[0] * float(r.metrics[info.axes[0]]), signs[1] * float(r.metrics[info.axes[1]])

    # Reference point: a little worse than the worst completed trial on both axes.
    worst = [max(as_min(r)[i] for r in done) for i in (0, 1)]
    spread = [max(as_min(r)[i] for r in done) - min(as_min(r)[i] for r in done) or abs(worst[i]) or 1.0 for i in (0, 1)]
    ref = (worst[0] + 0.1 * spread[0], worst[1] + 0.1 * spread[1])
    history, seen = [], []
    for r in sorted(done, key=lambda r: r.number):
        if r.feasible:
            seen.append(as_min(r))
        history.append((r.number, hypervolume(seen, ref)))
    return history, (signs[0] * ref[0], signs[1] * ref[1])


def _importances(study: optuna.Study, rows: list[TrialRow]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """fANOVA importance of each candidate field for each objective.

    Computed over the candidates (every field of every trial, the baseline included) rather than
    the study's own params, which are conditional (precision@placement) and absent for the baseline.
    """
    done = [r for r in rows if r.complete and r.duplicate_of is None]
    names = list(study.metric_names or [])
    if not names:
        return {}, ["no importances: the study has no named objectives"]
    varied = [p for p in PARAMS if len({json.dumps(r.params.get(p)) for r in done}) > 1]
    if len(done) < 4 or not varied:
        why = "vary no parameter" if done and not varied else "are too few (4 needed)"
        return {}, [f"no parameter importances: {len(done)} distinct completed trials {why}"]
    distributions = {
        p: optuna.distributions.CategoricalDistribution(
            sorted({r.params[p] for r in done}, key=lambda v: (str(type(v)), v))
        )
        for p in varied
    }
    out: dict[str, dict[str, float]] = {}
    notes: list[str] = []
    for name, direction in zip(names, study.directions):
        values = [r.metrics.get(name) for r in done]
        if any(v is None or not math.isfinite(float(v)) for v in values):
            notes.append(f"no importances for {name}: some trials did not record it")
            continue
        shadow = optuna.create_study(direction=direction)
        shadow.add_trials(
            [
                optuna.trial.create_trial(
                    params={p: r.params[p] for p in varied}, distributions=distributions, value=float(v)
                )
                for r, v in zip(done, values)
            ]
        )
        try:
            found = optuna.importance.get_param_importances(
                shadow, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=lambda t: t.value
            )
            out[name] = {k: float(v) for k, v in found.items()}
        except Exception as err:  # noqa: BLE001 - fANOVA needs variation in the target; a few trials may lack it
            notes.append(f"no importances for {name}: {one_line(err, 120)}")
    return out, notes
