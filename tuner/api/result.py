"""What ``tuner.tune`` returns: the finished study with its rules applied (``tuner.results``), as typed points,
a flat DataFrame, and the export and report of the command line, one call each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import results
from tuner.candidate import Candidate
from tuner.errors import TunerError
from tuner.metric import Metric
from tuner.study.storage import quiet_optuna, read_remeasure

if TYPE_CHECKING:
    import pandas as pd

    from tuner.artifact import Exported
    from tuner.explain import Comparison
    from tuner.objectives import Objectives
    from tuner.remeasure import RemeasureSummary
    from tuner.report import ReportInfo


@dataclass(frozen=True)
class TrialPoint:
    """One completed trial: its candidate, the study's figures and, where re-timed, the re-measured latency."""

    trial: int
    candidate: Candidate
    accuracy: float  # the study's metric (top-1, or the function given to tune)
    accuracy_drop: float  # the reference's accuracy minus this one's
    per_sample_ms: float  # the study's own timing
    remeasured_ms: float | None  # per sample, fresh processes at the end of the study
    speedup: float | None  # the baseline's per-sample latency over this one's (the study's figures)
    feasible: bool
    metrics: dict[str, Any]


@dataclass(frozen=True)
class TuneResult:
    study: optuna.Study
    objectives: Objectives
    metric: Metric
    studies_dir: str
    storage: str
    remeasure: RemeasureSummary | None = None
    log: Callable[[str], None] = print

    # ------------------------------------------------------------ points

    def _point(self, t: FrozenTrial) -> TrialPoint:
        m = t.user_attrs["metrics"]
        again = read_remeasure(self.study)
        base = results.baseline_trial(self.study)
        base_ms = None if base is None else base.user_attrs["metrics"]["per_sample_ms"]
        return TrialPoint(t.number, Candidate.from_dict(t.user_attrs["candidate"]), float(m["accuracy"]),
                          float(m.get("accuracy_drop", 0.0)), float(m["per_sample_ms"]),
                          (again.get(t.number) or {}).get("per_sample_ms"),
                          results.speedup(base_ms, m["per_sample_ms"]), results.is_feasible(t), dict(m))

    @property
    def pareto(self) -> list[TrialPoint]:
        """The study's front over its own objectives (feasible only), fastest first."""
        return sorted((self._point(t) for t in results.front(self.study)), key=lambda p: p.per_sample_ms)

    @property
    def baseline(self) -> TrialPoint | None:
        base = results.baseline_trial(self.study)
        return None if base is None else self._point(base)

    def best(self, max_drop: float | None = None, max_latency_ms: float | None = None) -> TrialPoint:
        """The fastest feasible point (within ``max_drop`` accuracy points), or the most accurate one at or under
        ``max_latency_ms`` per sample: ``tuner export``'s rules, by the re-measured figures where there are."""
        return self._point(self._select(None, max_drop, max_latency_ms)[0])

    def _select(self, trial: int | None, max_drop: float | None,
                max_latency_ms: float | None) -> tuple[FrozenTrial, str]:
        from tuner.artifact import select_trial

        if trial is None and max_drop is None and max_latency_ms is None:
            pick = results.fastest_feasible(results.points(self.study))
            if pick is None:
                raise TunerError(f"study {self.study.study_name} has no feasible trial; relax its constraints, "
                                 "or pick one with trial=N.")
            trial, why = pick.point.number, "fastest feasible trial"
            return next(t for t in results.completed(self.study) if t.number == trial), why
        return select_trial(self.study, trial, max_drop, max_latency_ms)

    # ------------------------------------------------------------ tables and files

    def to_dataframe(self) -> pd.DataFrame:
        """One row per trial, flat columns: trial, state, flags, every candidate param, every metric (the
        latency CI as two columns, a record such as ``recovery`` as ``recovery.epochs``...), the re-measured
        per-sample latency and its difference, speedup, note."""
        import pandas as pd

        again = read_remeasure(self.study)
        front = {t.number for t in results.front(self.study)}
        base = results.baseline_trial(self.study)
        base_ms = None if base is None else base.user_attrs["metrics"]["per_sample_ms"]
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            raw = dict(t.user_attrs.get("metrics") or {}) if t.state == TrialState.COMPLETE else {}
            lo, hi = raw.pop("latency_ci_ms", None) or (None, None)
            m = _flat(raw)
            e = again.get(t.number) or {}
            rows.append({"trial": t.number, "state": t.state.name.lower(), "baseline": bool(t.user_attrs.get("baseline")),
                         "pareto": t.number in front, "feasible": bool(m) and results.is_feasible(t),
                         "duplicate_of": t.user_attrs.get("duplicate_of"), **(t.user_attrs.get("candidate") or {}),
                         **m, "latency_ci_low_ms": lo, "latency_ci_high_ms": hi,
                         "remeasured_per_sample_ms": e.get("per_sample_ms"), "remeasure_diff": e.get("rel_diff"),
                         "speedup": results.speedup(base_ms, m.get("per_sample_ms")),
                         "note": str(t.user_attrs.get("error") or t.system_attrs.get("fail_reason") or "")[:200]})
        return pd.DataFrame.from_records(rows)

    def export(self, path: str | Path, trial: int | None = None, max_drop: float | None = None,
               max_latency_ms: float | None = None, torch_format: str = "export") -> Exported:
        """``tuner export``: rebuild the pick (default: the fastest feasible), re-measure it (and score the
        study's metric on it), write ``path/config.yaml``, the artifact in its runtime's form and a README."""
        from tuner.artifact import check_out, export

        check_out(Path(path))
        t, why = self._select(trial, max_drop, max_latency_ms)
        with quiet_optuna():
            return export(self.study, t, why, path, self.studies_dir, self.storage, torch_format, self.log,
                          self.metric)

    def report(self, path: str | Path, csv: str | Path | None = None) -> ReportInfo:
        """``tuner report``: one self-contained HTML page (and the trial table as CSV)."""
        from tuner.report import write_report

        with quiet_optuna():  # the importances' shadow studies would each log their creation
            return write_report(self.study, path, csv)

    def explain(self, trial: int | None = None, against: int | None = None) -> Comparison:
        """``tuner explain``: per-layer time of ``trial`` (default: the pick) against ``against`` (default: the
        baseline), from each runtime's own profiler, with findings; ``tuner.explain.render(comparison)`` is its text."""
        from tuner.explain import explain_study

        with quiet_optuna():
            return explain_study(self.study, trial, against, self.studies_dir, log=self.log)

    def summary(self) -> dict[str, Any]:
        """What ``tuner run --json`` prints: objectives, baseline, trial counts, the front, the fastest pick."""
        from tuner import summary

        return summary.summarize(self.study, self.objectives)


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested records as dotted columns (``recovery.epochs``), lists as one comma-separated cell."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out
