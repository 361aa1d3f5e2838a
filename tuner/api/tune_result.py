"""What ``tuner.tune`` returns: the finished study with its rules applied (``tuner.results``), as typed points,
a flat DataFrame, and the export and report of the command line, one call each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from tuner import results
from tuner.candidate import Candidate, label
from tuner.defaults import DEFAULTS
from tuner.errors import TunerError, in_keywords
from tuner.logs import to
from tuner.metric import Metric
from tuner.record import TrialRecord, read_remeasure
from tuner.study.storage import quiet_optuna

if TYPE_CHECKING:
    import pandas as pd

    from tuner.artifact import Exported
    from tuner.explain.compare import Comparison
    from tuner.objectives import Objectives
    from tuner.remeasure.outcome import RemeasureSummary
    from tuner.report.data import ReportInfo


@dataclass(frozen=True)
class TrialPoint:
    """One completed trial: its candidate, the study's figures and, where re-timed, the re-measured latency."""

    trial: int
    candidate: Candidate
    accuracy: float  # the study's metric (top-1, or the function given to tune)
    accuracy_drop: float  # the reference's accuracy minus this one's, in percentage points
    per_sample_ms: float  # the study's own timing
    remeasured_ms: float | None  # per sample, fresh processes at the end of the study
    speedup: float | None  # over the baseline by the study's speed figure (results.speedup_over): `tuner run --json`'s
    feasible: bool
    metrics: dict[str, Any]

    @property
    def label(self) -> str:
        """The candidate in a few words (``tuner.candidate.label``)."""
        return label(self.candidate)

    def __repr__(self) -> str:
        ms = self.remeasured_ms if self.remeasured_ms is not None else self.per_sample_ms
        return (
            f"TrialPoint(#{self.trial} {self.label}: accuracy {self.accuracy:.4g}, drop {self.accuracy_drop:.2f} "
            f"points, {ms:.4f} ms/sample"
            + (f", {self.speedup:.1f}x" if self.speedup else "")
            + ("" if self.feasible else ", infeasible")
            + ")"
        )


@dataclass(frozen=True)
class TuneResult:
    study: optuna.Study
    objectives: Objectives
    metric: Metric
    studies_dir: str
    storage: str
    remeasure: RemeasureSummary | None = None
    log: Callable[[str], None] = print  # where export and explain show their lines (tune(): its own ``log``)

    # ------------------------------------------------------------ points

    def _point(self, r: TrialRecord) -> TrialPoint:
        m = r.metrics or {}
        again = read_remeasure(self.study)
        speedup = results.speedup_over(results.baseline_trial(self.study), r, results.speed_metric(self.study), again)
        return TrialPoint(
            r.number,
            r.to_candidate(),
            float(m["accuracy"]),
            float(m.get("accuracy_drop", 0.0)),
            float(m["per_sample_ms"]),
            (again.get(r.number) or {}).get("per_sample_ms"),
            speedup,
            results.is_feasible(r),
            dict(m),
        )

    @property
    def pareto(self) -> list[TrialPoint]:
        """The study's front over its own objectives (feasible only), fastest first."""
        return sorted((self._point(t) for t in results.front(self.study)), key=lambda p: p.per_sample_ms)

    @property
    def baseline(self) -> TrialPoint | None:
        base = results.baseline_trial(self.study)
        return None if base is None else self._point(base)

    @in_keywords
    def best(self, max_drop: float | None = None, max_latency_ms: float | None = None) -> TrialPoint:
        """The fastest feasible point (within ``max_drop`` accuracy points), or the most accurate one at or under
        ``max_latency_ms`` per sample: ``tuner export``'s rules, by the re-measured figures where there are."""
        return self._point(self._select(None, max_drop, max_latency_ms)[0])

    def _select(
        self, trial: int | None, max_drop: float | None, max_latency_ms: float | None
    ) -> tuple[TrialRecord, str]:
        from tuner.artifact import select_trial

        if trial is None and max_drop is None and max_latency_ms is None:
            pick = results.fastest_feasible(results.points(self.study))
            if pick is None:
                raise TunerError(
                    f"study {self.study.study_name} has no feasible trial; relax its constraints, "
                    "or pick one with trial=N."
                )
            trial, why = pick.point.number, "fastest feasible trial"
            return next(t for t in results.completed(self.study) if t.number == trial), why
        return select_trial(self.study, trial, max_drop, max_latency_ms)

    # ------------------------------------------------------------ tables and files

    def to_dataframe(self) -> pd.DataFrame:
        """One row per trial, the report's CSV columns (``tuner.report.trials.trial_table``): trial, state, flags,
        every candidate param, every metric (the latency CI as two columns, a record such as ``recovery`` as
        ``recovery.steps``...), the re-measured per-sample latency and its difference, speedup, note."""
        import pandas as pd

        from tuner.report.data import trial_rows
        from tuner.report.trials import trial_table

        return pd.DataFrame.from_records(trial_table(trial_rows(self.study)))

    @in_keywords
    def export(
        self,
        path: str | Path,
        trial: int | None = None,
        max_drop: float | None = None,
        max_latency_ms: float | None = None,
        torch_format: str = DEFAULTS.torch_format,
    ) -> Exported:
        """``tuner export``: rebuild the pick (default: the fastest feasible), re-measure it (and score the
        study's metric on it), write ``path/config.yaml``, the artifact in its runtime's form and a README."""
        from tuner.artifact import check_out, export

        check_out(Path(path))
        t, why = self._select(trial, max_drop, max_latency_ms)
        with quiet_optuna(), to(self.log):
            return export(self.study, t, why, path, self.studies_dir, self.storage, torch_format, self.metric)

    @in_keywords
    def report(self, path: str | Path, csv: str | Path | None = None) -> ReportInfo:
        """``tuner report``: one self-contained HTML page (and the trial table as CSV)."""
        from tuner.report.writer import write_report

        with quiet_optuna():  # the importances' shadow studies would each log their creation
            return write_report(self.study, path, csv, self.studies_dir)

    def __repr__(self) -> str:
        front, pick = self.pareto, self._pick()
        return (
            f"TuneResult(study {self.study.study_name!r}, {len(self.study.trials)} trials, {len(front)} on the front"
            + (f", fastest feasible #{pick.trial} at {pick.speedup:.1f}x the baseline" if pick and pick.speedup else "")
            + ")"
        )

    def __str__(self) -> str:
        """The Pareto table ``tuner run`` prints."""
        from tuner import summary

        return summary.pareto_table(self.summary())

    def _pick(self) -> TrialPoint | None:
        chosen = results.fastest_feasible(results.points(self.study))
        return next((p for p in self.pareto if chosen and p.trial == chosen.point.number), None)

    @in_keywords
    def explain(self, trial: int | None = None, against: int | None = None) -> Comparison:
        """``tuner explain``: per-layer time of ``trial`` (default: the pick) against ``against`` (default: the
        baseline), from each runtime's own profiler, with findings; ``tuner.explain.render(comparison)`` is its text."""
        from tuner.explain.trials import explain_study

        with quiet_optuna(), to(self.log):
            return explain_study(self.study, trial, against, self.studies_dir)

    def summary(self) -> dict[str, Any]:
        """What ``tuner run --json`` prints: objectives, baseline, trial counts, the front, the fastest pick."""
        from tuner import summary

        return summary.summarize(self.study, self.objectives)
