"""``tune``: the one way a study runs, from Python and from ``tuner run`` alike (the command line only parses
its flags and prints the result). It checks every setting before any work, turns what it is given in memory
into files a trial's process loads (``inputs``), runs the study (``tuner.study.loop``), re-times its front
(``tuner.remeasure``) and returns a ``TuneResult``."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.defaults import DEFAULTS
from tuner.errors import check_number, in_keywords
from tuner.logs import stderr

if TYPE_CHECKING:
    from tuner.api.tune_result import TuneResult
    from tuner.objectives import Objectives
    from tuner.space import SearchSpace

_log = logging.getLogger(__name__)

DEFAULT_TRIALS = 20  # without a budget; with one and no n_trials: tuner.study.budget.NO_CAP


@in_keywords
def tune(
    model: Any = DEFAULTS.model,
    train: Any = DEFAULTS.data,
    val: Any = None,
    *,
    metric: Callable[[Any, Any], Any] | None = None,
    higher_is_better: bool = True,
    space: str | dict[str, Any] | SearchSpace = DEFAULTS.space,
    objectives: str | dict[str, Any] | Objectives = DEFAULTS.objectives,
    n_trials: int | None = None,
    budget: str | float | None = None,
    weights: str | None = None,
    classes: Sequence[str] | None = None,
    resolution: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = DEFAULTS.seed,
    holdout: float | None = None,
    train_steps: int | None = None,
    recover_steps: int | None = None,
    student: Any = None,
    study: str | None = None,
    storage: str | None = None,
    studies_dir: str = DEFAULTS.studies_dir,
    sampler: str = DEFAULTS.sampler,
    timeout: float | None = None,
    heartbeat: float = DEFAULTS.heartbeat,
    max_retries: int = DEFAULTS.max_retries,
    trial_timeout: float | None = None,
    remeasure_rounds: int = DEFAULTS.remeasure_rounds,
    allow_mixed_hardware: bool = False,
    corruptions: bool = DEFAULTS.corruptions,
    log: Callable[[str], None] = stderr,
    progress: bool = True,
) -> TuneResult:
    """Search the fastest accurate-enough build of ``model`` and return what the study found.

    model: an ``nn.Module`` with its trained weights, a builder taking ``num_classes=`` (importable), a
        ``--model`` value (``resnet18``, ``module:callable``, ``file.py:callable``) or an ONNX file path.
    train, val: ``"digits"`` or an ImageFolder path (``val`` left out), or both in memory: a torch
        ``Dataset`` / ``DataLoader`` of (image, label), or (images, labels) arrays; images N x 3 x H x W,
        uint8 pixels (normalized by ``mean`` / ``std``, default: the train split's) or float inputs ready for
        the model. ``train`` calibrates int8 and recovers pruned models; ``val`` is what accuracy is measured on.
    metric: a function of (logits, labels) torch tensors -> float, scored on the whole validation split; it is
        what the study calls ``accuracy`` (objectives, constraints and ``max_drop`` use it), ``top1`` is kept
        beside it. ``higher_is_better=False`` for a loss or an error rate (then negated). Default: top-1.
    student: the user's own smaller model, distilled from ``model`` where the space's ``student`` dimension tries
        it: an ``nn.Module`` (its weights are where its training starts), an importable builder or a ``--model``
        value (``--student``).
    space, objectives: a name or YAML path as ``--space`` / ``--objectives`` take, or the mapping such a file
        holds (``{"placement": {"choices": ["ort-cpu", "ov-cpu"]}, ...}``).
    budget: the time the whole run may take, the end-of-study re-measure included: ``"20m"``, ``"90s"``, ``"1.5h"``
        or seconds (``--budget``). ``n_trials`` then only caps the trials (default: 20 without a budget, none with).
    corruptions: score every trial on the corruption set too (``--corruptions``; implied by objectives that use
        ``corruption_drop``); needs kornia (``pip install 'tuner[robust]'``).
    The rest are ``tuner run``'s flags (``--n-trials`` is ``n_trials``); bad values raise a TunerError whose
    message names the keyword. Runs one trial at a time, each in a child process.
    """
    from tuner import hardware
    from tuner.api import inputs
    from tuner.api.tune_result import TuneResult
    from tuner.cache import Cache
    from tuner.data import DEFAULT_RESOLUTION
    from tuner.errors import TunerError
    from tuner.logs import to
    from tuner.metric import make_metric
    from tuner.objectives import load_objectives
    from tuner.record import TIME_ATTR
    from tuner.space import load_space
    from tuner.study.budget import NO_CAP, Plan, parse_budget
    from tuner.study.counts import count_trials, study_complete
    from tuner.study.samplers import SAMPLERS
    from tuner.study.settings import StudySettings
    from tuner.study.storage import (
        check_storage_url,
        check_study_name,
        default_storage,
        default_study_name,
        quiet_optuna,
    )
    from tuner.workload_spec import check_student, make_spec, resolve_spec

    with to(log):  # the library's lines (logging) shown as print showed them, where ``log`` says
        if sampler not in SAMPLERS:
            raise TunerError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}.")
        seconds = parse_budget(budget)
        plan = Plan(seconds, remeasure_rounds)  # the budget's clock starts here: setup is part of what it pays for
        check_number("--n-trials", n_trials, 1)
        n_trials = n_trials or (NO_CAP if seconds else DEFAULT_TRIALS)
        check_number("--timeout", timeout, 0, above=True, why=" seconds (leave it out for no limit)")
        check_number("--heartbeat", heartbeat, 0, above=True, why=" seconds")
        check_number("--max-retries", max_retries, 0)
        check_number("--remeasure-rounds", remeasure_rounds, 0, why=" (0 skips the re-measure)")
        check_number("--trial-timeout", trial_timeout, 0, above=True, why=" seconds (leave it out for the default)")
        if storage:
            check_storage_url(storage)
        scorer = make_metric(metric, higher_is_better)
        objectives = load_objectives(objectives) if isinstance(objectives, (str, dict)) else objectives
        if corruptions or objectives.uses_corruption:  # before anything loads: one line saying what to install
            from tuner.corruptions import missing

            problem = missing()
            if problem:
                raise TunerError(
                    f"{'--corruptions' if corruptions else objectives.source + ': corruption_drop'}: {problem}"
                )
        spec = make_spec(
            "",
            "",
            weights,
            resolution,
            mean,
            std,
            seed,
            train_steps=train_steps,
            recover_steps=recover_steps,
            holdout=holdout,
            studies_dir=studies_dir,
        )
        # What is given in memory is saved into the cache (so that every process of the study can load it), and only
        # that: names and paths, as the command line gives them, leave nothing behind when they are wrong.
        cache = Cache(Path(studies_dir) / "cache")
        data_ref, size = inputs.data_reference(train, val, classes, seed, cache)
        expected = resolution or size or DEFAULT_RESOLUTION.get(data_ref, 224)
        model_ref, model_name = inputs.model_reference(model, expected, cache)
        student_ref = inputs.model_reference(student, expected, cache)[0] if student is not None else None
        spec = dataclasses.replace(
            spec, model=model_ref, data=data_ref, resolution=resolution or size, student=student_ref
        )
        check_student(spec.model, spec.student)
        spec = resolve_spec(spec)  # as the study records it: export and verify read it from any folder
        space = load_space(space) if isinstance(space, (str, dict)) else space  # probes the placements: loads torch
        if spec.onnx:
            space = space.without_torch_graph(f"{Path(spec.model).name} is an ONNX file")
        elif not spec.student:
            space = space.without("student", True, "no --student given (derived students: drop_blocks, prune_ratio)")
        in_flight = max(int(v) for v in (*space.values("requests"), *space.values("streams")))  # the most under load
        for batch_size in sorted({int(b) for b in space.values("batch_size")}):  # refuse before any work
            problem = hardware.check_fits(batch_size, expected, requests=in_flight)
            if problem:
                raise TunerError(f"{space.source}: {problem}")
        name = check_study_name(
            study or default_study_name(spec, expected, model_name, studies_dir=None if storage else studies_dir)
        )
        storage = storage or default_storage(studies_dir, name)
        spec = dataclasses.replace(spec, claims=storage)  # its workers claim what they build on it (tuner.claims)
        settings = StudySettings(
            name,
            storage,
            space,
            objectives,
            spec,
            sampler,
            seed,
            n_trials,
            timeout,
            heartbeat,
            max_retries,
            allow_mixed_hardware,
            trial_timeout,
            scorer,
            corruptions,
        )
        with quiet_optuna():
            study_ = _run(settings, log, progress, plan)
            remeasured = None
            # A study the budget ended is as complete as it will get: its front is re-timed within what is left.
            rounds = plan.rounds_that_fit(study_) if remeasure_rounds else 0
            if rounds and (study_complete(count_trials(study_), n_trials) or plan.limited):
                from tuner.remeasure.orchestrate import remeasure_pareto  # loads torch: after the checks

                _log.info(
                    f"re-timing the Pareto set and the baseline in fresh processes ({rounds} rounds"
                    + (f" of the {remeasure_rounds} asked: what the budget leaves" if rounds < remeasure_rounds else "")
                    + ")"
                )
                started = time.monotonic()
                remeasured = remeasure_pareto(
                    study_,
                    spec.cache_dir,
                    rounds=rounds,
                    deadline=plan.started + plan.seconds if plan.seconds else None,
                )
                plan.remeasure_s = time.monotonic() - started
            elif remeasure_rounds and plan.limited:
                _log.info("no time left in the budget for the re-measure: the figures are the study's own")
            study_.set_user_attr(TIME_ATTR, plan.record())
        return TuneResult(study_, objectives, scorer, studies_dir, storage, remeasured, log)


@in_keywords
def load(
    study: str,
    storage: str | None = None,
    studies_dir: str = DEFAULTS.studies_dir,
    metric: Callable[[Any, Any], Any] | None = None,
) -> TuneResult:
    """A stored study's ``TuneResult`` as it was saved: nothing is built or timed again (its end-of-study re-measure
    is read from the study). ``metric``: the study's metric function, so that ``export`` scores it again (without
    it, export re-measures top-1 and says so); the study refuses one other than its own when it runs again."""
    from tuner.api.tune_result import TuneResult
    from tuner.metric import Metric, make_metric
    from tuner.objectives import Constraint, Objectives
    from tuner.record import read_study
    from tuner.study.storage import existing_storage, load_existing_study, quiet_optuna

    with quiet_optuna():
        found = load_existing_study(study, storage, studies_dir)
    kept = read_study(found)
    recorded = kept.metric or {}
    higher = bool(recorded.get("higher_is_better", True))
    scorer = (
        make_metric(metric, higher)
        if metric is not None
        else Metric(name=recorded.get("name") or "top1", higher_is_better=higher)
    )
    objectives = Objectives(
        f"study {study}",
        tuple(found.metric_names or ()),
        tuple(d.name.lower() for d in found.directions),
        tuple(Constraint.parse(c) for c in kept.constraints),
    )
    return TuneResult(found, objectives, scorer, studies_dir, existing_storage(study, storage, studies_dir))


def _run(s: Any, log: Callable[[str], None], progress: bool, plan: Any) -> Any:
    """The study, with what it is about said once the workload loaded (bad input stays one line before)."""
    from tuner import summary
    from tuner.guardrails import GUARD_METRICS
    from tuner.logs import to
    from tuner.measure.latency import QUICK_TIMING
    from tuner.study.budget import NO_CAP
    from tuner.study.loop import run_study
    from tuner.study.storage import mask_url

    def announce(s: Any) -> None:  # the settings as the loaded model narrowed them
        late = sorted(
            {
                c.metric
                for c in s.objectives.constraints
                if c.metric in GUARD_METRICS and c.metric not in s.objectives.guard_limits()
            }
        )  # tuner.guardrails: ECE, or a min bound
        _log.info(f"study {s.name} on {mask_url(s.storage)}")
        if QUICK_TIMING:
            _log.info("timing: quick (TUNER_TIMING=quick): windows a fifth as long, rough figures; not for a pick")
        _log.info(f"placements: {', '.join(s.space.placements)}" + "".join(f"\n  dropped {d}" for d in s.space.dropped))
        _log.info(
            f"objectives: {', '.join(f'{d} {n}' for n, d in zip(s.objectives.names, s.objectives.directions))}"
            + (
                f"; subject to {', '.join(c.words for c in s.objectives.constraints)}"
                if s.objectives.constraints
                else ""
            )
            + (f"; accuracy is the metric {s.metric.name}" if s.metric.custom else "")
            + (f"; no early stop on {', '.join(late)} (a partial count bounds nothing)" if late else "")
        )

    if not progress:
        return run_study(s, lambda p: None, announce, plan)
    with summary.ProgressBar(s.n_trials if s.n_trials < NO_CAP else None, log) as bar, to(bar.say):  # lines above it
        return run_study(s, bar.update, announce, plan)
