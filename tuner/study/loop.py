"""The run loop: sampler, the enqueued baseline, the objective, resume, retries and Ctrl-C.

A trial samples a Candidate, hands it to the worker process (build + measure), and records metrics,
constraints and the hardware fingerprint.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner import hardware, results
from tuner.candidate import Candidate
from tuner.errors import (
    CandidateBuildError,
    ConfigError,
    HopelessCandidate,
    MeasurementError,
    ResourceExhausted,
    UnsupportedCombination,
)
from tuner.metric import TOP1_METRIC, Metric, chance_warning
from tuner.record import TrialRecord, read_enqueued, read_study, read_trial, read_trials
from tuner.study import fidelity
from tuner.study.counts import count_trials, space_exhausted, study_complete
from tuner.study.resume import check_space, check_workload
from tuner.study.storage import check_study_name, make_storage, write_measured
from tuner.worker import TrialCrashed, TrialInterrupted, Worker

if TYPE_CHECKING:
    from tuner.objectives import Objectives
    from tuner.space import SearchSpace
    from tuner.workload import WorkloadSpec

SAMPLERS = ("tpe", "nsga2", "gp", "random")


def baseline_candidate(workload: WorkloadSpec | None = None) -> Candidate:
    """The reference point every speedup is against: what the user has before tuning. For an ONNX file (no torch
    graph to run) that is the file as given, on ONNX Runtime's CPU provider in fp32."""
    placement = "ort-cpu" if workload is not None and workload.onnx else "torch-cpu"
    return Candidate(prune_ratio=0.0, precision="fp32", fold_bn=False, batch_size=1, placement=placement,
                     threads=hardware.cores())


@dataclass(frozen=True)
class StudySettings:
    name: str
    storage: str
    space: SearchSpace
    objectives: Objectives
    workload: WorkloadSpec
    sampler: str = "tpe"
    seed: int = 0
    n_trials: int = 20
    timeout: float | None = None
    heartbeat: float = 10.0  # seconds; a trial silent for 3 heartbeats is stale (its worker died)
    max_retries: int = 1  # how often a stale or crashed trial is run again
    allow_mixed_hardware: bool = False
    trial_timeout: float | None = None  # wall-clock seconds per trial; None: default_trial_timeout(setup time)
    metric: Metric = TOP1_METRIC  # what the study calls accuracy: top-1, or a function of the user's (tuner.metric)


@dataclass
class Progress:
    """What the screen shows after each trial (kept apart from how it is drawn)."""

    done: int = 0
    repeats: int = 0  # trials that repeated a measured candidate (not counted in done)
    pareto: int = 0
    best_speedup: float | None = None
    last: str = ""
    stop_requested: bool = False


def default_trial_timeout(setup_seconds: float) -> float:
    """Generous, scaled to the workload: a trial builds and measures one candidate, which takes a small share of
    what loading the data and training a baseline took; 15 minutes at the least (a first deep prune's
    recovery on real photos), 30 times the setup beyond that."""
    return max(900.0, 30.0 * setup_seconds)


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, n_trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 4)))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}.")


def next_sampler(sampler: optuna.samplers.BaseSampler, after_repeat: bool, seed: int) -> optuna.samplers.BaseSampler:
    """A sampler that proposed a candidate tried before has settled on what it knows: the next proposal is
    drawn at random instead (the repeat itself reused the earlier outcome and is not counted)."""
    return optuna.samplers.RandomSampler(seed=seed) if after_repeat else sampler


def open_study(s: StudySettings, storage: optuna.storages.BaseStorage | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (enqueueing the baseline) or load it to resume; returns (study, created)."""
    check_study_name(s.name)
    directions = list(s.objectives.directions)
    storage = storage or make_storage(s.storage, s.heartbeat, s.max_retries)
    try:
        study = optuna.create_study(study_name=s.name, storage=storage, directions=directions)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=s.name, storage=storage)
        created = False
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(f"study {s.name} optimizes {study.metric_names} with other directions; "
                              "use its objectives file again, or a new --study name.") from None
        if study.metric_names and list(study.metric_names) != list(s.objectives.names):
            raise ConfigError(f"study {s.name} optimizes {', '.join(study.metric_names)}, not "
                              f"{', '.join(s.objectives.names)}; use its objectives, or a new --study name.") from None
        _check_same_hardware(study, s)
        recorded = read_study(study).metric
        if (recorded or TOP1_METRIC.record()) != s.metric.record():
            raise ConfigError(f"study {s.name} scores accuracy by {recorded}, not by "
                              f"{s.metric.record()}; pass the same metric, or a new study name.") from None
        check_space(study, s.space, s.name)  # before any trial: a parameter Optuna cannot merge fails each one
    if created:  # only the creator enqueues: a resumed or joined study never gets a second baseline
        study.set_metric_names(list(s.objectives.names))
        study.set_user_attr("fingerprint", hardware.fingerprint())
        study.set_user_attr("workload", s.workload.to_record())
        study.set_user_attr("metric", s.metric.record())
        # What each constraint of a trial is (optuna-dashboard lists them by position, unnamed).
        study.set_user_attr("constraints", [str(c) for c in s.objectives.constraints])
        # With its params in the space's own names, samplers learn from the baseline like any trial
        # (NSGA-II's intersection search space would otherwise be empty); else it runs as a fixed point.
        params = s.space.params_of(baseline_candidate(s.workload))
        study.enqueue_trial(params or {}, user_attrs={"baseline": True, "fixed_point": params is None})
        for anchor in anchor_params(s.space):
            study.enqueue_trial(anchor, user_attrs={"anchor": True})
    return study, created


def anchor_params(space: SearchSpace) -> list[dict[str, Any]]:
    """The params of what an expert sets up by hand in ten lines, where the space holds it: the unpruned model in
    int8 on each placement of the space that runs int8 here, batch 1, on every core (else one thread); and where the
    space serves several streams, the same on one stream per core of one thread each (what OpenVINO's THROUGHPUT
    hint sets up). Measured first, so that the search starts from the strongest hand-made points of this machine
    rather than having to stumble on them, and the front is never worse than them."""
    from tuner.runtimes import PLACEMENTS

    found = []
    cores = hardware.cores()
    for placement in space.placements:
        p = PLACEMENTS[placement]
        if p.unavailable() or p.refuse("int8"):
            continue
        for threads in dict.fromkeys((cores, 1)):
            params = space.params_of(Candidate(precision="int8", placement=placement, batch_size=1, threads=threads))
            if params is not None:
                found.append(params)
                break
        streams = space.params_of(Candidate(precision="int8", placement=placement, batch_size=1, threads=1,
                                            streams=cores)) if cores > 1 else None
        if streams is not None:
            found.append(streams)
    return found


def _check_same_hardware(study: optuna.Study, s: StudySettings) -> None:
    """Latencies from different machines are not comparable: joining needs the same fingerprint."""
    theirs, ours = read_study(study).fingerprint, hardware.fingerprint()
    if theirs is None or theirs == ours or s.allow_mixed_hardware:
        return
    diff = ", ".join(f"{k}: {theirs.get(k)} here {ours.get(k)}" for k in ours if theirs.get(k) != ours.get(k))
    raise ConfigError(f"study {s.name} was started on other hardware ({diff[:300]}); its latencies would not be "
                      "comparable: run on the same kind of machine, or pass --allow-mixed-hardware.")


def _retry_after_crash(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retries: int) -> None:
    """A process crash may be transient (memory pressure): run the same candidate again, a bounded number of times.
    A trial stopped by Ctrl-C is queued again whatever the count: the resume runs it first."""
    failed = read_trial(trial)
    if failed.state != "fail" or not (failed.crashed or failed.interrupted):
        return
    chain, t = 0, failed
    trials = {x.number: x for x in read_trials(study)}
    while t.retry_of is not None and chain <= max_retries:
        chain, t = chain + 1, trials[t.retry_of]
    if chain < max_retries or failed.interrupted:
        study.enqueue_trial(failed.params, user_attrs={**read_enqueued(trial).attrs(), "retry_of": failed.number})


class Objective:
    """Optuna's objective: sample -> evaluate in the worker -> record."""

    def __init__(self, settings: StudySettings, worker: Worker, reference_accuracy: float, trial_timeout: float,
                 resolution: int):
        self.s = settings
        self.resolution = resolution
        self.worker = worker
        self.reference_accuracy = reference_accuracy
        self.trial_timeout = trial_timeout
        self.fingerprint = hardware.fingerprint()

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
            from tuner.runtimes import check_supported  # the parent loads the runtimes only when it samples

            check_supported(candidate)
            too_big = hardware.check_fits(candidate.batch_size, self.resolution, candidate.threads,
                                          streams=candidate.streams, requests=candidate.in_flight)
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
            try:
                metrics = self._evaluate(trial, candidate)
            except HopelessCandidate as err:  # cannot be feasible: stopped early, not a failure
                trial.set_user_attr("error", str(err))
                raise optuna.TrialPruned(str(err)) from None
            except ResourceExhausted as err:  # the machine's, not the candidate's: run again when the study resumes
                trial.set_user_attr("error", str(err))
                trial.study.enqueue_trial(trial.params, user_attrs={**read_enqueued(trial).attrs(),
                                                                    "retry_of": trial.number})
                raise
            except UnsupportedCombination as err:  # a refusal only the build could see: this candidate only
                trial.set_user_attr("error", str(err))
                raise optuna.TrialPruned(str(err)) from None
            except (CandidateBuildError, MeasurementError) as err:
                trial.set_user_attr("error", str(err))
                trial.set_user_attr("crashed", isinstance(err, TrialCrashed))
                trial.set_user_attr("interrupted", isinstance(err, TrialInterrupted))
                raise
        metrics["accuracy_drop"] = self.reference_accuracy - metrics["accuracy"]
        write_measured(trial, metrics, self.s.objectives.constraints)  # figures and constraints, public API only
        return self.s.objectives.values(metrics)

    def _evaluate(self, trial: optuna.Trial, candidate: Candidate) -> dict[str, Any]:
        """Build and measure in the worker; a compressed candidate that the short recovery left just short of the
        floor, and that would be the fastest feasible point, is recovered longer (``tuner.study.fidelity``)."""
        # The baseline is measured in full: it is the reference, never "hopeless".
        floor = None if read_enqueued(trial).baseline else self.s.objectives.min_accuracy(self.reference_accuracy)
        promotable = fidelity.can_promote(candidate, floor)
        assert floor is not None or not promotable
        load = self.s.objectives.uses_load  # measured under load too: the objectives use a figure under load
        ev = self.worker.evaluate(candidate, fidelity.screening_floor(floor) if promotable else floor,
                                  timeout=self.trial_timeout, load=load)
        seconds = dict(ev.build_seconds)
        hits, misses = ev.cache_hits, ev.cache_misses
        if promotable and fidelity.should_promote(ev.metrics, floor, _fastest_feasible_ms(trial.study)):
            trial.set_user_attr("short_recovery", {k: ev.metrics[k] for k in ("accuracy", "per_sample_ms", "recovery")})
            candidate = fidelity.promoted(candidate)
            trial.set_user_attr("candidate", candidate.to_dict())
            ev = self.worker.evaluate(candidate, floor, timeout=self.trial_timeout, load=load)
            seconds = {k: seconds.get(k, 0.0) + ev.build_seconds.get(k, 0.0) for k in {*seconds, *ev.build_seconds}}
            hits, misses = hits + ev.cache_hits, misses + ev.cache_misses
        elif floor is not None and ev.metrics["accuracy"] < floor:
            raise HopelessCandidate(f"{ev.metrics['accuracy']:.2%} after the short recovery, below the {floor:.2%} "
                                    "required, and not promoted to the long one (not faster than the feasible points)")
        trial.set_user_attr("build_seconds", seconds)
        trial.set_user_attr("cache", {"hits": hits, "misses": misses})
        return dict(ev.metrics)

    @staticmethod
    def _outcome_before(trial: optuna.Trial, candidate: Candidate) -> TrialRecord | None:
        """The first trial of the very same candidate that was measured, refused or stopped early as hopeless."""
        wanted = candidate.to_dict()
        for t in read_trials(trial.study, (TrialState.COMPLETE, TrialState.PRUNED)):
            recorded = t.sampled if t.sampled is not None else t.candidate
            if recorded is not None and Candidate.fill(recorded) == wanted and not t.repeat and (
                    t.state == "pruned" or t.metrics is not None):
                return t
        return None


def run_study(s: StudySettings, on_progress: Callable[[Progress], None] = lambda p: None,
              log: Callable[[str], None] = print,
              announce: Callable[[StudySettings], None] = lambda s: None) -> optuna.Study:
    """Run (or resume) the study until it holds ``n_trials`` finished trials or the timeout passes.
    ``announce`` is called once the workload loaded and the study opened (setup can no longer fail on input), with
    the settings as the model narrowed them (``fit_to_model``)."""
    done_before = 0
    worker = Worker(s.workload, s.metric, on_status=log)
    try:
        check_study_name(s.name)
        # A database server is checked first (an unreachable one should not wait for a baseline to train);
        # a SQLite file only once the workload loaded, so bad input leaves no empty study file behind.
        local = s.storage.startswith("sqlite")
        storage = None if local else make_storage(s.storage, s.heartbeat, s.max_retries)
        started = time.monotonic()
        # Data and model load in the worker: bad input fails before any write. A hang here is bounded too.
        reference = worker.reference(timeout=max(3600.0, s.trial_timeout or 0.0))
        s = fit_to_model(s, reference)
        trial_timeout = s.trial_timeout or default_trial_timeout(time.monotonic() - started)
        study, created = open_study(s, storage)
        check_workload(study, s.name, reference.pop("identity"), s.workload)  # resumed: the same data and weights
        announce(s)
        done_before = count_trials(study).accounted
        if not read_study(study).reference:
            study.set_user_attr("reference", reference)
        kept = read_study(study)
        reference_accuracy = kept.reference_accuracy
        assert reference_accuracy is not None
        warning = chance_warning(kept.reference)
        if warning:
            log(warning)
        if not created:
            log(f"resuming study {s.name}: {done_before} of {s.n_trials} trials already finished")
        # Re-seed per resume, or a seeded sampler would replay the first run's random proposals.
        sampler = make_sampler(s.sampler, s.seed + done_before, s.n_trials)
        progress = Progress(done=done_before)
        explore = False  # the last trial repeated a measured candidate
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            if progress.stop_requested:
                raise KeyboardInterrupt
            progress.stop_requested = True
            log("\nCtrl-C: stopping the running trial (recorded, and run again on resume)")
            worker.interrupt()

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            nonlocal explore
            _retry_after_crash(study, trial, s.max_retries)
            record = read_trial(trial)
            explore = record.repeat
            progress.done, _, _, progress.repeats, _ = count_trials(study)
            progress.pareto = len(results.front(study))
            progress.best_speedup = best_speedup(study)
            progress.last = results.describe_trial(record)
            on_progress(progress)

        objective = Objective(s, worker, reference_accuracy, trial_timeout, int(reference["resolution"]))
        deadline = time.monotonic() + s.timeout if s.timeout else float("inf")
        signal.signal(signal.SIGINT, on_sigint)
        try:
            # One trial at a time until the study holds n_trials accounted for. Other workers may share
            # the study: when the rest are running elsewhere, wait, since one of them may die and its
            # trial come back (stale -> failed -> re-queued) for whoever is still here.
            while not progress.stop_requested and time.monotonic() < deadline:
                optuna.storages.fail_stale_trials(study)
                counts = count_trials(study)
                if study_complete(counts, s.n_trials):
                    break
                if counts.accounted + counts.running >= s.n_trials and not counts.waiting:
                    time.sleep(min(1.0, s.heartbeat))
                    continue
                study.sampler = next_sampler(sampler, explore, s.seed + counts.accounted + counts.repeats)
                study.optimize(objective, n_trials=1, callbacks=[after_trial], gc_after_trial=False,
                               catch=(CandidateBuildError, MeasurementError))
        finally:
            signal.signal(signal.SIGINT, previous)
        counts = count_trials(study)
        if progress.stop_requested:  # the study is saved; what it holds is partial, not the study's result
            log(f"stopped by Ctrl-C after {counts.accounted} of {s.n_trials} trials; run the same command to resume")
            raise KeyboardInterrupt
        elif counts.accounted < s.n_trials and space_exhausted(counts.repeat_streak, s.n_trials):
            log(f"stopped after {counts.repeat_streak} proposals in a row of candidates measured before: "
                f"the search space holds few more than the {counts.accounted} measured")
        return study
    finally:
        worker.close()


def fit_to_model(s: StudySettings, reference: dict[str, Any]) -> StudySettings:
    """The settings with the space narrowed to what the loaded model can take (each narrowing listed on screen,
    as unavailable placements are): no more dropped blocks than it has droppable ones."""
    blocks = reference.get("droppable_blocks")
    if blocks is None:
        return s
    why = f"the model has {blocks} droppable block{'s' * (blocks != 1)} (whose output has their input's shape)"
    return dataclasses.replace(s, space=s.space.capped("drop_blocks", blocks, why))


def _fastest_feasible_ms(study: optuna.Study) -> float | None:
    pick = results.fastest_feasible(results.points(study))
    return pick.point.per_sample_ms if pick is not None else None


def best_speedup(study: optuna.Study) -> float | None:
    """The fastest feasible point's speedup over the baseline (for the progress line)."""
    pick = results.fastest_feasible(results.points(study))
    base = results.baseline_trial(study)
    if pick is None or base is None or base.metrics is None:
        return None
    return results.speedup(results.cost_ms(base.metrics, results.speed_metric(study)), pick.point.per_sample_ms)
