"""Optuna's objective, one trial: sample a Candidate, hand it to the worker process (build + measure), record
its metrics, constraints and hardware fingerprint; what only the build can refuse costs that trial alone."""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner import hardware, results
from tuner.candidate import Candidate, label
from tuner.errors import (
    CandidateBuildError,
    HopelessCandidate,
    MeasurementError,
    ResourceExhausted,
    UnsupportedCombination,
)
from tuner.metric import drop_points
from tuner.record import TrialRecord, read_enqueued, read_trials
from tuner.study import costs, fidelity
from tuner.study.budget import MIN_TRIAL_TIMEOUT, duration
from tuner.study.storage import write_measured
from tuner.worker import TrialCrashed, TrialInterrupted, Worker

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tuner.study.budget import Plan
    from tuner.study.settings import StudySettings
    from tuner.workload_spec import WorkloadSpec


def baseline_candidate(workload: WorkloadSpec | None = None) -> Candidate:
    """The reference point every speedup is against: what the user has before tuning. For an ONNX file (no torch
    graph to run) that is the file as given, on ONNX Runtime's CPU provider in fp32."""
    placement = "ort-cpu" if workload is not None and workload.onnx else "torch-cpu"
    return Candidate(
        prune_ratio=0.0, precision="fp32", fold_bn=False, batch_size=1, placement=placement, threads=hardware.cores()
    )


class Objective:
    """Optuna's objective: sample -> evaluate in the worker -> record."""

    def __init__(
        self,
        settings: StudySettings,
        worker: Worker,
        reference_accuracy: float,
        trial_timeout: float,
        resolution: int,
        plan: Plan | None = None,
        reference_corruption: dict[str, Any] | None = None,
    ):
        self.s = settings
        # the reference's pass over the corruption set, where scored (tuner.pipeline.reference_corruption)
        self.corruption = reference_corruption
        self.reference_corruption = reference_corruption["accuracy"] if reference_corruption else None
        self.resolution = resolution
        self.worker = worker
        self.reference_accuracy = reference_accuracy
        self.trial_timeout = trial_timeout
        self.plan = plan  # the time budget: a trial that cannot finish within it is not started
        self.fingerprint = hardware.fingerprint()
        self.seconds: dict[str, float] = {}  # the running trial's build steps so far (kept when it stops early)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        fixed = read_enqueued(trial).fixed_point
        try:
            candidate = baseline_candidate(self.s.workload) if fixed else self.s.space.sample(trial)
        except UnsupportedCombination as err:
            trial.set_user_attr("error", str(err))
            raise optuna.TrialPruned(str(err)) from None
        trial.set_user_attr("sampled", candidate.to_dict())
        trial.set_user_attr("candidate", candidate.to_dict())  # what was built: the long recovery if promoted
        trial.set_user_attr("hardware", self.fingerprint)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        earlier = self._outcome_before(trial, candidate)
        if earlier is not None:  # a repeat: the earlier outcome stands, nothing is built or timed again
            trial.set_user_attr("duplicate_of", earlier.number)
            if earlier.state == "pruned":
                reason = earlier.error
                trial.set_user_attr("error", reason)
                raise optuna.TrialPruned(reason)
        try:
            from tuner.runtimes.registry import check_supported  # the parent loads the runtimes only when it samples

            check_supported(candidate)
            too_big = hardware.check_fits(
                candidate.batch_size,
                self.resolution,
                candidate.threads,
                streams=candidate.streams,
                requests=candidate.in_flight,
            )
            if too_big:
                raise UnsupportedCombination(too_big)
        except UnsupportedCombination as err:  # refused before any work; the sampler learns from it
            trial.set_user_attr("error", str(err))
            raise optuna.TrialPruned(str(err)) from None
        if earlier is not None:
            assert earlier.metrics is not None and earlier.candidate is not None
            metrics = dict(earlier.metrics)
            trial.set_user_attr("candidate", earlier.candidate)  # the long recovery, if it was promoted
        else:
            if not read_enqueued(trial).baseline:  # the baseline is the reference: it always runs
                self._start_within_budget(trial, candidate)
            self.seconds = {}
            try:
                metrics = self._evaluate(trial, candidate)
            except HopelessCandidate as err:  # cannot be feasible: stopped early, not a failure
                trial.set_user_attr("error", str(err))
                trial.set_user_attr("stopped_early", True)  # its architecture is recovered (and cached) all the same
                trial.set_user_attr("build_seconds", _added(self.seconds, getattr(err, "build_seconds", {})))
                raise optuna.TrialPruned(str(err)) from None
            except ResourceExhausted as err:  # the machine's, not the candidate's: run again when the study resumes
                trial.set_user_attr("error", str(err))
                trial.study.enqueue_trial(
                    trial.params, user_attrs={**read_enqueued(trial).attrs(), "retry_of": trial.number}
                )
                raise
            except UnsupportedCombination as err:  # a refusal only the build could see: this candidate only
                trial.set_user_attr("error", str(err))
                raise optuna.TrialPruned(str(err)) from None
            except (CandidateBuildError, MeasurementError) as err:
                trial.set_user_attr("error", str(err))
                trial.set_user_attr("crashed", isinstance(err, TrialCrashed))
                trial.set_user_attr("interrupted", isinstance(err, TrialInterrupted))
                raise
        metrics["accuracy_drop"] = drop_points(self.reference_accuracy, metrics["accuracy"])
        if self.reference_corruption is not None and "corruption_accuracy" in metrics:
            metrics["corruption_drop"] = drop_points(self.reference_corruption, metrics["corruption_accuracy"])
        write_measured(trial, metrics, self.s.objectives.constraints)  # figures and constraints, public API only
        return self.s.objectives.values(metrics)

    def _evaluate(self, trial: optuna.Trial, candidate: Candidate) -> dict[str, Any]:
        """Build and measure in the worker; a compressed candidate that the short recovery left just short of the
        floor, and that would be the fastest feasible point, is recovered longer (``tuner.study.fidelity``)."""
        # The baseline is measured in full: it is the reference, never "hopeless".
        baseline = read_enqueued(trial).baseline
        floor = None if baseline else self.s.objectives.min_accuracy(self.reference_accuracy)
        promotable = fidelity.can_promote(candidate, floor)
        if promotable and "long" in costs.recovered(read_trials(trial.study), candidate.to_dict()):
            # Its architecture earned the long recovery in an earlier trial: those weights are cached, and the
            # short ones would judge this variant (another precision, placement, batch) by less than the study has.
            candidate, promotable = fidelity.promoted(candidate), False
            trial.set_user_attr("candidate", candidate.to_dict())
        assert floor is not None or not promotable
        load = self.s.objectives.uses_load  # measured under load too: the objectives use a figure under load
        # A guardrail bound to break stops a trial early, but not the short recovery's screening: the long one,
        # where earned, may mend what the short one forgot.
        limits = {} if baseline else self.s.objectives.guard_limits()
        robust = None if baseline else self.s.objectives.min_corruption(self.reference_corruption)  # likewise
        # The baseline is the reference unchanged: its corruption top-1 is the reference's pass (five times the
        # validation images at batch 1 would cost the baseline trial more than all its other work).
        try:
            ev = self.worker.evaluate(
                candidate,
                fidelity.screening_floor(floor) if promotable else floor,
                timeout=self._timeout(trial),
                load=load,
                limits={} if promotable else limits,
                min_corruption=None if promotable else robust,
                corruptions=False if baseline and self.corruption else None,
            )
        except HopelessCandidate as err:
            if not promotable:
                raise
            # the bar it missed is the screen's, not the floor: say both, or "93% required" reads like a bug
            raise HopelessCandidate(
                f"{err} after the short recovery: the floor is {floor:.2%}, out of the long recovery's reach"
            ) from None
        if baseline and self.corruption:
            c = self.corruption
            ev.metrics.update(
                corruption_accuracy=c["accuracy"],
                corruption_by_kind=c["by_kind"],
                corruption_images=c["images"],
                corruption_seconds=0.0,
                corruption_of="reference",
            )
        seconds = self.seconds = dict(ev.build_seconds)
        hits, misses = ev.cache_hits, ev.cache_misses
        if promotable and fidelity.should_promote(ev.metrics, floor, _fastest_feasible_ms(trial.study)):
            self._promote_within_budget(trial, ev.metrics, floor)
            trial.set_user_attr("short_recovery", {k: ev.metrics[k] for k in ("accuracy", "per_sample_ms", "recovery")})
            candidate = fidelity.promoted(candidate)
            trial.set_user_attr("candidate", candidate.to_dict())
            ev = self.worker.evaluate(
                candidate, floor, timeout=self._timeout(trial), load=load, limits=limits, min_corruption=robust
            )
            seconds = self.seconds = _added(seconds, ev.build_seconds)
            hits, misses = hits + ev.cache_hits, misses + ev.cache_misses
        elif floor is not None and ev.metrics["accuracy"] < floor:
            if promotable:  # close but slow as sampled: its faster recipes may still earn the long recovery
                trial.set_user_attr("screened", {k: ev.metrics[k] for k in ("accuracy", "per_sample_ms")})
            raise HopelessCandidate(
                f"{ev.metrics['accuracy']:.2%} after the short recovery, below the {floor:.2%} "
                "required, and not promoted to the long one (not faster than the feasible points)"
            )
        trial.set_user_attr("build_seconds", seconds)
        trial.set_user_attr("cache", {"hits": hits, "misses": misses})
        return dict(ev.metrics)

    def _timeout(self, trial: optuna.Trial) -> float:
        """The trial's wall-clock limit: --trial-timeout, and under a budget no later than the trials' share of it."""
        if self.plan is None:
            return self.trial_timeout
        if read_enqueued(trial).baseline:  # it always runs, within what is left of the budget at all
            return min(self.trial_timeout, max(MIN_TRIAL_TIMEOUT, self.plan.left()))
        return self.plan.trial_timeout(trial.study, self.trial_timeout)

    def _start_within_budget(self, trial: optuna.Trial, candidate: Candidate) -> None:
        """Say what the trial will take; under a budget, do not start one whose estimate does not fit what is left
        before the re-measure's reserve (a new recovery also needs room for its fastest follow-up after it: a
        recovered architecture pays through its cheap variants)."""
        if self.plan is None:
            return
        trials = read_trials(trial.study)
        est = costs.estimate(candidate, trials, self.plan.prior)
        trial.set_user_attr("estimate_s", round(est.seconds, 1))
        if not self.plan.limited:
            if est.recovery:  # long work is told before it starts, as it is while it runs
                _log.info(f"#{trial.number} {label(candidate)}: started, {est.words()}")
            return
        left = self.plan.left_for_trials(trial.study)
        need = est.seconds + (costs.cheap_seconds(trials, True) if est.recovery else 0.0)
        if need > left:
            reason = (
                f"not started: {est.words()}"
                + (" and its fastest follow-up" if est.recovery else "")
                + f" would not end within the {duration(max(0.0, left))} the budget leaves before the re-measure"
            )
            trial.set_user_attr("budget_skip", True)
            trial.set_user_attr("error", reason)
            raise optuna.TrialPruned(reason)
        _log.info(
            f"#{trial.number} {label(candidate)}: started, {est.words()}; {duration(left)} of the budget left "
            "for trials"
        )

    def _promote_within_budget(self, trial: optuna.Trial, metrics: dict[str, Any], floor: float) -> None:
        """Under a budget, the long recovery only where it ends before the trials' share of the budget runs out."""
        if self.plan is None or not self.plan.limited:
            return
        trials = read_trials(trial.study)
        steps = int((metrics.get("recovery") or {}).get("steps") or 0)
        need = costs.long_recovery_seconds(steps, trials, self.plan.prior) + costs.cheap_seconds(trials, False)
        left = self.plan.left_for_trials(trial.study)
        if need > left:
            raise HopelessCandidate(
                f"{metrics['accuracy']:.2%} after the short recovery, below the {floor:.2%} "
                f"required; the long one (about {need:.0f} s) would not end within the "
                f"{duration(max(0.0, left))} the budget leaves"
            )

    @staticmethod
    def _outcome_before(trial: optuna.Trial, candidate: Candidate) -> TrialRecord | None:
        """The first trial of the very same candidate that was measured, refused or stopped early as hopeless."""
        wanted = candidate.to_dict()
        for t in read_trials(trial.study, (TrialState.COMPLETE, TrialState.PRUNED)):
            recorded = t.sampled if t.sampled is not None else t.candidate
            if (
                recorded is not None
                and Candidate.fill(recorded) == wanted
                and not t.repeat
                and not t.budget_skip
                and (t.state == "pruned" or t.metrics is not None)
            ):
                return t
        return None


def _added(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b.get(k, 0.0) for k in {*a, *b}}


def _fastest_feasible_ms(study: optuna.Study) -> float | None:
    pick = results.fastest_feasible(results.points(study))
    return pick.point.per_sample_ms if pick is not None else None
