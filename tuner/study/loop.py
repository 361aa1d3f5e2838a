"""The run loop: the study opened (the baseline and the anchors enqueued, resume checked), one trial at a time
through the objective (``tuner.study.objective``), retries, workers sharing a study, and Ctrl-C."""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from tuner import hardware, results
from tuner.candidate import Candidate
from tuner.errors import CandidateBuildError, ConfigError, MeasurementError
from tuner.metric import TOP1_METRIC, chance_warning
from tuner.record import TrialRecord, read_enqueued, read_study, read_trial, read_trials
from tuner.study import costs
from tuner.study.budget import NO_CAP, SKIPS_IN_A_ROW, Plan, duration
from tuner.study.counts import FINISHED, count_trials, space_exhausted, study_complete
from tuner.study.followups import carried, follow_ups, instead
from tuner.study.objective import Objective, baseline_candidate
from tuner.study.resume import check_space, check_workload
from tuner.study.samplers import make_sampler, next_sampler
from tuner.study.settings import StudySettings
from tuner.study.storage import check_study_name, make_storage
from tuner.worker import Worker

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tuner.space import SearchSpace


@dataclass
class Progress:
    """What the screen shows after each trial (kept apart from how it is drawn)."""

    done: int = 0
    repeats: int = 0  # trials that repeated a measured candidate (not counted in done)
    pareto: int = 0
    best_speedup: float | None = None
    last: str = ""
    stop_requested: bool = False
    budget_left: float | None = None  # seconds of the time budget left (None: no budget)


def default_trial_timeout(setup_seconds: float) -> float:
    """Generous, scaled to the workload: a trial builds and measures one candidate, which takes a small share of
    what loading the data and training a baseline took; 15 minutes at the least (a first deep prune's
    recovery on real photos), 30 times the setup beyond that."""
    return max(900.0, 30.0 * setup_seconds)


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
            raise ConfigError(
                f"study {s.name} optimizes {study.metric_names} with other directions; "
                "use its objectives file again, or a new --study name."
            ) from None
        if study.metric_names and list(study.metric_names) != list(s.objectives.names):
            raise ConfigError(
                f"study {s.name} optimizes {', '.join(study.metric_names)}, not "
                f"{', '.join(s.objectives.names)}; use its objectives, or a new --study name."
            ) from None
        _check_same_constraints(study, s)
        _check_same_hardware(study, s)
        recorded = read_study(study).metric
        if (recorded or TOP1_METRIC.record()) != s.metric.record():
            raise ConfigError(
                f"study {s.name} scores accuracy by {recorded}, not by "
                f"{s.metric.record()}; pass the same metric, or a new study name."
            ) from None
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
    from tuner.runtimes.registry import PLACEMENTS

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
        streams = (
            space.params_of(Candidate(precision="int8", placement=placement, batch_size=1, threads=1, streams=cores))
            if cores > 1
            else None
        )
        if streams is not None:
            found.append(streams)
    return found


def _check_same_constraints(study: optuna.Study, s: StudySettings) -> None:
    """A resume under other constraints is refused: each trial recorded its violations of the constraints it ran
    under, and feasibility (the front, the pick, export) reads those, so old and new trials would be judged by
    different rules, and a constraint added later (corruption_drop, flip_rate) never by the trials before it. Order
    does not matter. A study from before the tuner recorded them is not checked."""
    recorded = study.user_attrs.get("constraints")
    wanted = [str(c) for c in s.objectives.constraints]
    if isinstance(recorded, list) and sorted(recorded) != sorted(wanted):
        raise ConfigError(
            f"study {s.name} judged its trials by {', '.join(recorded) or 'no constraints'}, not by "
            f"{', '.join(wanted) or 'no constraints'}; pass --study NEW to start a new study, or its objectives again."
        )


def _check_same_hardware(study: optuna.Study, s: StudySettings) -> None:
    """Latencies from different machines are not comparable: joining needs the same fingerprint."""
    theirs, ours = read_study(study).fingerprint, hardware.fingerprint()
    if theirs is None or theirs == ours or s.allow_mixed_hardware:
        return
    diff = ", ".join(f"{k}: {theirs.get(k)} here {ours.get(k)}" for k in ours if theirs.get(k) != ours.get(k))
    raise ConfigError(
        f"study {s.name} was started on other hardware ({diff[:300]}); its latencies would not be "
        "comparable: run on the same kind of machine, or pass --allow-mixed-hardware."
    )


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


def run_study(
    s: StudySettings,
    on_progress: Callable[[Progress], None] = lambda p: None,
    announce: Callable[[StudySettings], None] = lambda s: None,
    plan: Plan | None = None,
) -> optuna.Study:
    """Run (or resume) the study until it holds ``n_trials`` finished trials, the timeout passes or the time budget
    (``plan``) has no room for another trial. ``announce`` is called once the workload loaded and the study opened
    (setup can no longer fail on input), with the settings as the model narrowed them (``fit_to_model``)."""
    plan = plan or Plan(None, 0)
    done_before = 0
    worker = Worker(s.workload, s.metric, corruptions=s.measures_corruption)
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
        stored = read_study(study).reference
        if not stored or ("corruption" in reference and "corruption" not in stored):  # resumed with --corruptions
            study.set_user_attr("reference", {**stored, **reference} if stored else reference)
        if "corruption" in reference:
            _log.info(corruption_cost(reference["corruption"], int(reference["validation_images"])))
        kept = read_study(study)
        plan.prior = costs.Prior.read(kept.reference)
        reference_accuracy = kept.reference_accuracy
        assert reference_accuracy is not None
        warning = chance_warning(kept.reference)
        if warning:
            _log.info(warning)
        if not created:
            _log.info(f"resuming study {s.name}: {done_before} {_of(s.n_trials)}trials already finished")
        # Re-seed per resume, or a seeded sampler would replay the first run's random proposals.
        sampler = make_sampler(s.sampler, s.seed + done_before, s.n_trials)
        progress = Progress(done=done_before)
        explore = False  # the last trial repeated a measured candidate
        skipped = 0  # proposals in a row not started: they did not fit the budget left
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            if progress.stop_requested:
                raise KeyboardInterrupt
            progress.stop_requested = True
            _log.info("\nCtrl-C: stopping the running trial (recorded, and run again on resume)")
            worker.interrupt()

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            nonlocal explore, skipped
            _retry_after_crash(study, trial, s.max_retries)
            record = read_trial(trial)
            explore = record.repeat
            skipped = skipped + 1 if record.budget_skip else 0
            _queue_follow_ups(study, record, s, reference_accuracy)
            progress.done, _, _, progress.repeats, _ = count_trials(study)
            progress.budget_left = plan.left() if plan.limited else None
            progress.pareto = len(results.front(study))
            progress.best_speedup = best_speedup(study)
            progress.last = results.describe_trial(record)
            on_progress(progress)

        objective = Objective(
            s,
            worker,
            reference_accuracy,
            trial_timeout,
            int(reference["resolution"]),
            plan,
            reference_corruption=reference.get("corruption"),
        )
        deadline = time.monotonic() + s.timeout if s.timeout else float("inf")
        plan.setup_s = time.monotonic() - plan.started
        # A process started with Ctrl-C ignored (a script's background job) keeps ignoring it, as Python does
        # while the baseline trains; a terminal's foreground run gets the two-step stop.
        if previous is not signal.SIG_IGN:
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
                plan.ended = _out_of_budget(study, plan, skipped, counts.waiting)
                if plan.ended:
                    _log.info(plan.ended)
                    break
                study.sampler = next_sampler(sampler, explore, s.seed + counts.accounted + counts.repeats)
                study.optimize(
                    objective,
                    n_trials=1,
                    callbacks=[after_trial],
                    gc_after_trial=False,
                    catch=(CandidateBuildError, MeasurementError),
                )
        finally:
            signal.signal(signal.SIGINT, previous)
        counts = count_trials(study)
        if progress.stop_requested:  # the study is saved; what it holds is partial, not the study's result
            _log.info(
                f"stopped by Ctrl-C after {counts.accounted} {_of(s.n_trials)}trials; run the same command to resume"
            )
            raise KeyboardInterrupt
        elif counts.accounted < s.n_trials and space_exhausted(counts.repeat_streak, s.n_trials):
            _log.info(
                f"stopped after {counts.repeat_streak} proposals in a row of candidates measured before: "
                f"the search space holds few more than the {counts.accounted} measured"
            )
        return study
    finally:
        worker.close()


def corruption_cost(found: dict[str, Any], validation_images: int) -> str:
    """What the corruption set costs, said once per run: its images, the baseline's top-1 there and its pass."""
    made = found.get("made_seconds")
    return (
        f"corruption set: {', '.join(found['kinds'])} of the {validation_images:,} validation images "
        f"({found['images']:,} images, "
        + (f"made once in {made:.1f} s and cached" if made is not None else "from the cache")
        + f"); the baseline's top-1 there {found['accuracy']:.2%}, its pass {found['seconds']:.1f} s; every trial "
        f"adds a pass over them ({found['images'] / max(validation_images, 1):.0f}x its accuracy pass)"
    )


def _of(n_trials: int) -> str:
    return "" if n_trials >= NO_CAP else f"of {n_trials} "


def _out_of_budget(study: optuna.Study, plan: Plan, skipped: int, waiting: int) -> str:
    """Why the budget ends the trials here ("" while it has room): less left than the cheapest trial takes, or
    the sampler's last proposals all dearer than what is left (and nothing cheaper queued)."""
    trials = read_trials(study)
    if not plan.limited or not any(t.state in FINISHED for t in trials):  # the baseline runs first, whatever it costs
        return ""
    left = plan.left_for_trials(study)
    cheapest = min(costs.cheap_seconds(trials, int8) for int8 in (False, True))
    words = f"{duration(max(0.0, left))} of the budget left before the re-measure"
    if left < cheapest:
        return f"budget: {words}, less than the cheapest trial takes (about {cheapest:.0f} s): the trials end here"
    if skipped >= SKIPS_IN_A_ROW and not waiting:
        return f"budget: the last {skipped} proposals would not end within the {words}: the trials end here"
    return ""


def _queue_follow_ups(study: optuna.Study, record: TrialRecord, s: StudySettings, reference_accuracy: float) -> None:
    """After a trial that recovered a new architecture: its cheap follow-ups, queued to run next; after one that
    became the fastest feasible point: its recipe on the more accurate architectures already built; after a
    proposal the budget did not start: its recipe on an architecture already built."""
    floor = s.objectives.min_accuracy(reference_accuracy)
    trials, speed, counts = read_trials(study), results.speed_metric(study), count_trials(study)
    # no more than the study has trials left: one queued beyond them would stay waiting once the study ends
    room = max(0, s.n_trials - counts.accounted - counts.running - counts.waiting)
    queued = follow_ups(trials, record, s.space, floor, speed)[:room]
    back = carried(trials, record, s.space, speed)[: room - len(queued)]
    cheaper = instead(trials, record, s.space, speed)[: room - len(queued) - len(back)]
    for params in queued + back + cheaper:
        study.enqueue_trial(params, user_attrs={"follow_up_of": record.number})
    if queued:
        _log.info(
            f"queued {len(queued)} cheap follow-up{'s' * (len(queued) > 1)} of #{record.number}'s architecture "
            "(its recovery is cached): the fastest recipes so far"
        )
    if back:
        _log.info(
            f"queued #{record.number}'s recipe, the fastest so far, on {len(back)} more accurate "
            f"architecture{'s' * (len(back) > 1)} already built (seconds each, not a recovery)"
        )
    if cheaper:
        _log.info(
            f"queued #{record.number}'s recipe on the fastest architecture already built instead (seconds, not a "
            "recovery)"
        )


def fit_to_model(s: StudySettings, reference: dict[str, Any]) -> StudySettings:
    """The settings with the space narrowed to what the loaded model can take (each narrowing listed on screen,
    as unavailable placements are): no more dropped blocks than it has droppable ones."""
    blocks = reference.get("droppable_blocks")
    if blocks is None:
        return s
    why = f"the model has {blocks} droppable block{'s' * (blocks != 1)} (whose output has their input's shape)"
    return dataclasses.replace(s, space=s.space.capped("drop_blocks", blocks, why))


def best_speedup(study: optuna.Study) -> float | None:
    """The fastest feasible point's speedup over the baseline (for the progress line)."""
    pick = results.fastest_feasible(results.points(study))
    base = results.baseline_trial(study)
    if pick is None or base is None or base.metrics is None:
        return None
    return results.speedup(results.cost_ms(base.metrics, results.speed_metric(study)), pick.point.per_sample_ms)
