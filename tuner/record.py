"""What a study recorded, read back as typed values: one ``TrialRecord`` per trial and one ``StudyRecord`` per study.

The study loop and ``tuner.study.storage`` write a trial's outcome as Optuna user attrs (plain JSON, so that
optuna-dashboard and ``trials_dataframe()`` show it); this module is the one place that reads them back. Every
reader (summary, report, export, the API, the re-measure, the counts, ``tuner.results``' rules) goes through
``read_trial``, so an attr renamed or added is changed here once. It depends on Optuna and nothing of the tuner's
above ``tuner.candidate``, so that both the study loop and the rules can import it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.candidate import Candidate
from tuner.names import DROP_UNIT

REMEASURE_ATTR = "remeasure"  # study user attr: the end-of-study re-measure (tuner.remeasure.outcome.RemeasureSummary)
DROP_UNIT_ATTR = "drop_unit"  # trial user attr: the unit of its accuracy_drop (tuner.names.DROP_UNIT)
TIME_ATTR = "time"  # study user attr: where the last run's time went (tuner.study.budget.Plan.record)
IDENTITY_ATTR = "workload_identity"  # study user attr: what its reference rests on (tuner.study.resume)
EXPLAIN_ATTR = "explain"  # study user attr: the last `tuner explain` (tuner.explain.compare.Comparison.to_record())


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the tuner recorded it. Fields are None (or empty) where the trial did not get that far."""

    number: int
    state: str  # complete | pruned | fail | running | waiting
    params: dict[str, Any]  # the sampler's own params (what a retry enqueues again)
    candidate: dict[str, Any] | None  # what was built (the long recovery where promoted), as recorded
    sampled: dict[str, Any] | None  # what the sampler proposed (differs from ``candidate`` once promoted)
    metrics: dict[str, Any] | None  # tuner.measure.Metrics.to_dict() + accuracy_drop (points), once measured
    constraints: dict[str, float]  # name -> violation (<= 0: met), as Optuna reads them (FrozenTrial.constraints)
    baseline: bool = False  # the reference every speedup is against
    fixed_point: bool = False  # the baseline runs outside the space (its params are not the space's)
    anchor: bool = False  # an expert's hand-made point, enqueued first
    error: str = ""  # why it failed or was refused ("" where it did not)
    crashed: bool = False  # its process died (a retry may run it again)
    interrupted: bool = False  # Ctrl-C stopped its process: it runs again first on resume
    duplicate_of: int | None = None  # the earlier trial of the same candidate whose outcome it reused
    retry_of: int | None = None  # the crashed trial it runs again
    stale_retry_of: int | None = None  # the trial whose worker died, re-queued by Optuna's heartbeat callback
    short_recovery: dict[str, Any] | None = None  # promoted: what the short recovery had reached
    screened: dict[str, Any] | None = None  # stopped after its short recovery, not promoted: what it reached
    build_seconds: dict[str, float] = field(default_factory=dict)  # per build step
    cache_hits: int | None = None
    cache_misses: int | None = None
    hardware: dict[str, Any] | None = None  # the fingerprint of the machine that measured it
    worker: str | None = None  # host:pid of the process that ran it
    started_at: float | None = None  # when it started (seconds since the epoch)
    seconds: float | None = None  # its wall time, start to finish (None: not finished)
    follow_up_of: int | None = None  # a cheap follow-up of this trial: it recovered a new architecture, or the
    # budget did not start it (tuner.study.followups)
    budget_skip: bool = False  # not started: its estimated cost did not fit the time budget left
    stopped_early: bool = False  # built, then stopped as hopeless (its architecture was recovered all the same)
    estimate_s: float | None = None  # what it was estimated to take before it started (tuner.study.costs)

    @property
    def complete(self) -> bool:
        """Completed, with its candidate and metrics recorded: what the rules and tables count."""
        return self.state == "complete" and self.metrics is not None and self.candidate is not None

    @property
    def repeat(self) -> bool:
        return self.duplicate_of is not None

    @property
    def trained(self) -> bool:
        """It trained a recovery itself (a cached one is only loaded: no ``prune`` step is timed)."""
        return "prune" in self.build_seconds

    @property
    def retried_from(self) -> int | None:
        """The failed trial this one runs again, whichever way it was re-queued."""
        return self.retry_of if self.retry_of is not None else self.stale_retry_of

    @property
    def filled(self) -> dict[str, Any]:
        """The candidate with fields recorded before they existed at their defaults ({} where none was recorded)."""
        return Candidate.fill(self.candidate) if self.candidate is not None else {}

    def to_candidate(self) -> Candidate:
        return Candidate.from_dict(self.candidate, source=f"trial #{self.number}")


@dataclass(frozen=True)
class Enqueued:
    """What a trial was queued as, readable while it runs (``open_study`` enqueues these)."""

    baseline: bool = False  # the reference every speedup is against
    fixed_point: bool = False  # the baseline runs outside the space (its params are not the space's)
    anchor: bool = False  # an expert's hand-made point, enqueued first

    def attrs(self) -> dict[str, bool]:
        """The user attrs that queue a trial as this again (a retry keeps what it repeats)."""
        return {
            k: True
            for k, v in (("baseline", self.baseline), ("fixed_point", self.fixed_point), ("anchor", self.anchor))
            if v
        }


def read_enqueued(trial: optuna.trial.BaseTrial) -> Enqueued:
    """A running trial's (``optuna.Trial``) or a finished one's flags."""
    a = trial.user_attrs
    return Enqueued(bool(a.get("baseline")), bool(a.get("fixed_point")), bool(a.get("anchor")))


def _dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) else None


def _metrics(a: dict[str, Any]) -> dict[str, Any] | None:
    """A trial's figures, its accuracy drop in points: a study made before points were the unit kept fractions."""
    metrics = _dict(a.get("metrics"))
    if metrics and a.get(DROP_UNIT_ATTR) != DROP_UNIT and isinstance(metrics.get("accuracy_drop"), (int, float)):
        metrics["accuracy_drop"] = 100.0 * metrics["accuracy_drop"]
    return metrics


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_trial(t: FrozenTrial) -> TrialRecord:
    """The one reader of a trial's attrs (written by ``tuner.study.loop`` and ``tuner.study.storage``)."""
    a = t.user_attrs
    cache = a.get("cache") if isinstance(a.get("cache"), dict) else {}
    queued = read_enqueued(t)
    with warnings.catch_warnings():  # public, but marked experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        stale = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
    return TrialRecord(
        number=t.number,
        state=t.state.name.lower(),
        params=dict(t.params),
        candidate=_dict(a.get("candidate")),
        sampled=_dict(a.get("sampled")),
        metrics=_metrics(a) if t.state == TrialState.COMPLETE else None,
        constraints={str(k): float(v) for k, v in t.constraints.items()},
        baseline=queued.baseline,
        fixed_point=queued.fixed_point,
        anchor=queued.anchor,
        error=str(a.get("error") or ""),
        crashed=bool(a.get("crashed")),
        interrupted=bool(a.get("interrupted")),
        duplicate_of=_int(a.get("duplicate_of")),
        retry_of=_int(a.get("retry_of")),
        stale_retry_of=_int(stale),
        short_recovery=_dict(a.get("short_recovery")),
        screened=_dict(a.get("screened")),
        build_seconds={str(k): float(v) for k, v in (_dict(a.get("build_seconds")) or {}).items()},
        cache_hits=_int(cache.get("hits")),
        cache_misses=_int(cache.get("misses")),
        hardware=_dict(a.get("hardware")),
        worker=a.get("worker") if isinstance(a.get("worker"), str) else None,
        started_at=t.datetime_start.timestamp() if t.datetime_start else None,
        seconds=(t.datetime_complete - t.datetime_start).total_seconds()
        if t.datetime_start and t.datetime_complete
        else None,
        follow_up_of=_int(a.get("follow_up_of")),
        budget_skip=bool(a.get("budget_skip")),
        stopped_early=bool(a.get("stopped_early")),
        estimate_s=float(a["estimate_s"]) if isinstance(a.get("estimate_s"), (int, float)) else None,
    )


def read_trials(study: optuna.Study, states: tuple[TrialState, ...] | None = None) -> list[TrialRecord]:
    return [read_trial(t) for t in study.get_trials(deepcopy=False, states=states)]


@dataclass(frozen=True)
class StudyRecord:
    """What the tuner keeps on a study beside its trials (``tuner.study.loop.open_study``, the run, the re-measure)."""

    reference: dict[str, Any]  # the unchanged model's figures: accuracy, validation_images, resolution, ({} before)
    fingerprint: dict[str, Any] | None  # the machine that created it
    workload: dict[str, Any] | None  # WorkloadSpec.to_record()
    metric: dict[str, Any] | None  # tuner.metric.Metric.record(): what the study calls accuracy
    constraints: tuple[str, ...]  # the objectives' constraints in words, in order
    remeasure: dict[int, dict[str, Any]]  # trial number -> its re-measure entry (read_remeasure)
    identity: dict[str, Any] | None = None  # what its reference rests on (None: made before studies recorded it)
    explain: dict[str, Any] | None = None  # the last layer-by-layer comparison (`tuner explain`), for the report
    time: dict[str, Any] | None = None  # where the last run's time went (``tuner.study.budget.Plan.record``)

    @property
    def reference_accuracy(self) -> float | None:
        value = self.reference.get("accuracy")
        return float(value) if isinstance(value, (int, float)) else None


def read_remeasure(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """Trial number -> its re-measure entry (``RemeasureEntry.to_dict()``), for entries that hold a figure."""
    record = study.user_attrs.get(REMEASURE_ATTR) or {}
    kept = record.get("trials") or {}
    found = {int(n): {**e, "rounds": record.get("rounds")} for n, e in kept.items() if isinstance(e, dict)}
    return {n: e for n, e in found.items() if isinstance(e.get("per_sample_ms"), (int, float))}


def read_study(study: optuna.Study) -> StudyRecord:
    a = study.user_attrs
    return StudyRecord(
        reference=_dict(a.get("reference")) or {},
        fingerprint=_dict(a.get("fingerprint")),
        workload=_dict(a.get("workload")),
        metric=_dict(a.get("metric")),
        constraints=tuple(str(c) for c in a.get("constraints") or ()),
        remeasure=read_remeasure(study),
        identity=_dict(a.get(IDENTITY_ATTR)),
        explain=_dict(a.get(EXPLAIN_ATTR)),
        time=_dict(a.get(TIME_ATTR)),
    )
