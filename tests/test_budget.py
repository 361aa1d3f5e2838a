"""The time budget's pieces, fast: reading --budget, estimating a trial from the study's records, the cheap
follow-ups of a newly recovered architecture, and the account of where a run's time went."""

from __future__ import annotations

import dataclasses

import optuna
import pytest

from tests.conftest import run_tuner
from tuner.candidate import Candidate
from tuner.errors import TunerError
from tuner.record import TrialRecord
from tuner.space import load_space
from tuner.study import costs
from tuner.study.budget import parse_budget
from tuner.study.followups import carried, follow_ups
from tuner.summary import time_table

PRIOR = costs.Prior(step_seconds=0.5, short_steps=40.0, long_extra=3.0)


def record(
    number: int,
    candidate: Candidate,
    *,
    accuracy: float = 0.9,
    ms: float = 1.0,
    seconds: float = 4.0,
    build: dict[str, float] | None = None,
    steps: int = 0,
    drop: float = -0.1,
    **attrs,
) -> TrialRecord:
    """A completed trial as ``tuner.record.read_trial`` returns it."""
    metrics = {
        "accuracy": accuracy,
        "per_sample_ms": ms,
        "measure_seconds": 2.0,
        "accuracy_seconds": 0.5,
        "recovery": {"steps": steps} if steps else None,
    }
    return TrialRecord(
        number=number,
        state="complete",
        params={},
        candidate=candidate.to_dict(),
        sampled=candidate.to_dict(),
        metrics=metrics,
        constraints={"accuracy_drop": drop},
        build_seconds=build or {},
        seconds=seconds,
        started_at=100.0 + number,
        **attrs,
    )


@pytest.mark.parametrize(
    ("words", "seconds"), [("90s", 90), ("20m", 1200), ("1.5h", 5400), (" 2 M ", 120), ("45", 45), (30, 30), (0.5, 0.5)]
)
def test_a_budget_reads_seconds_minutes_and_hours(words, seconds):
    assert parse_budget(words) == seconds


@pytest.mark.parametrize("words", ["ten minutes", "-5m", "0", "5d", "", "1e3", "nan", True, float("inf"), [1]])
def test_a_bad_budget_is_one_line_naming_the_flag(words):
    with pytest.raises(TunerError, match=r"^--budget must be a duration above 0 such as 90s, 20m or 1.5h"):
        parse_budget(words)


def test_a_bad_budget_on_the_command_line_exits_2_with_one_line(tmp_path):
    r = run_tuner("--budget", "20 minutes", "--studies-dir", str(tmp_path), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        (
            "tuner: error: --budget must be a duration above 0 such as 90s, 20m or "
            "1.5h (a number alone is seconds), got '20 minutes'."
        )
    ]
    assert not list(tmp_path.iterdir())  # refused before any work


def test_a_cached_architecture_costs_a_build_and_a_new_one_a_recovery_at_the_studys_pace():
    pruned = Candidate(prune_ratio=0.4, placement="ort-cpu", precision="int8")
    trials = [
        record(0, Candidate(), seconds=3.0),
        record(1, Candidate(placement="ort-cpu", precision="int8"), seconds=6.0),
        # recovered 0.4 itself: 40 steps in 10 s (0.25 s a step, half the prior's pace)
        record(
            2, Candidate(prune_ratio=0.4), seconds=15.0, steps=40, build={"prune": 0.3, "recover": 10.0, "export": 0.7}
        ),
    ]
    cached = costs.estimate(pruned, trials, PRIOR)
    assert cached.recovery == 0 and cached.seconds == 6.0  # the slowest int8 trial so far
    new = costs.estimate(Candidate(prune_ratio=0.6), trials, PRIOR)
    assert new.recovery == pytest.approx(0.25 * 40)  # the study's pace times the most steps a short one takes
    assert new.seconds == pytest.approx(10.0 + 4.7)  # the slowest float trial without its recovery: 15 - 10.3
    assert "new short recovery" in new.what
    first = costs.estimate(Candidate(prune_ratio=0.6), trials[:2], PRIOR)
    assert first.recovery == pytest.approx(0.5 * 40)  # before any recovery: the prior
    long = costs.estimate(Candidate(prune_ratio=0.4, recovery="long"), trials, PRIOR)
    assert long.recovery == pytest.approx(0.25 * 40 * 3)  # continues the cached short one


def test_a_promoted_trials_short_and_long_recoveries_replace_the_prior():
    """The figures of a real study (resnet18 on imagenette at 96 px): the setup priced a step at 1.83 s, the first
    recovery ran 141 short steps in 87.2 s and 282 long ones in 200.2 s (it continued the short one): the next new
    architecture is priced at 0.68 s a step, not the prior's pace three times slower."""
    prior = costs.Prior(step_seconds=1.83, short_steps=141.0, long_extra=3.0)
    promoted = record(
        3,
        Candidate(prune_ratio=0.6, drop_blocks=3, recovery="long"),
        seconds=300.0,
        build={"prune": 0.5, "recover": 287.4},
        short_recovery={"accuracy": 0.675, "recovery": {"steps": 141, "before": 0, "seconds": 87.2}},
    )
    promoted.metrics["recovery"] = {"steps": 423, "before": 141, "seconds": 200.2}
    new = costs.estimate(Candidate(prune_ratio=0.4, drop_blocks=2), [record(0, Candidate()), promoted], prior)
    assert new.recovery == pytest.approx((87.2 + 200.2) / 423 * 141)
    # a follow-up that continued a cached short recovery counts only the steps it added
    follow = record(4, Candidate(prune_ratio=0.6, recovery="long"), build={"prune": 0.4, "recover": 100.0})
    follow.metrics["recovery"] = {"steps": 423, "before": 141}
    assert costs.step_seconds([follow], prior) == pytest.approx(100.0 / 282)


def test_a_trial_stopped_early_still_recovered_its_architecture():
    hopeless = TrialRecord(
        number=3,
        state="pruned",
        params={},
        candidate=Candidate(prune_ratio=0.6).to_dict(),
        sampled=None,
        metrics=None,
        constraints={},
        stopped_early=True,
        seconds=9.0,
    )
    assert costs.recovered([hopeless], Candidate(prune_ratio=0.6, precision="bf16").to_dict()) == {"short"}
    assert costs.recovered([hopeless], Candidate(prune_ratio=0.4).to_dict()) == set()


SPACE = load_space(
    {
        "placement": {"choices": ["torch-cpu", "ort-cpu"]},
        "precision": {"per": "placement", "choices": {"torch-cpu": ["fp32"], "ort-cpu": ["fp32", "int8"]}},
        "prune_ratio": {"choices": [0.0, 0.2, 0.4]},
        "batch_size": {"choices": [1, 8]},
        "threads": {"choices": [1, 2]},
    }
)


def test_a_new_architecture_gets_the_fastest_recipes_as_follow_ups():
    fast = Candidate(placement="ort-cpu", precision="int8", threads=1, batch_size=8)
    trials = [
        record(0, Candidate(threads=2), ms=2.0),
        record(1, fast, ms=0.2),
        record(2, Candidate(placement="ort-cpu", threads=2), ms=0.8),
        record(
            3, Candidate(placement="ort-cpu", threads=1), ms=0.5, accuracy=0.5, drop=0.3
        ),  # infeasible: its recipe is not followed
        record(4, Candidate(prune_ratio=0.4, threads=2), ms=1.5, accuracy=0.88),
    ]
    queued = follow_ups(trials, trials[-1], SPACE, floor=0.89)
    built = [SPACE.sample(optuna.trial.FixedTrial(p)) for p in queued]  # what the queued trials will build
    assert [(c.placement, c.precision, c.threads, c.batch_size) for c in built] == [
        ("ort-cpu", "int8", 1, 8),
        ("ort-cpu", "fp32", 2, 1),
    ]  # fastest first; its own recipe (#0's) not again
    assert {c.prune_ratio for c in built} == {0.4}
    done = [*trials, record(5, Candidate(prune_ratio=0.4, threads=2), follow_up_of=4)]
    assert follow_ups(done, trials[-1], SPACE, floor=0.89) == []  # queued once
    again = record(6, Candidate(prune_ratio=0.4, placement="ort-cpu", threads=2))
    assert follow_ups([*trials, again], again, SPACE, floor=0.89) == []  # not a new architecture
    far = record(4, Candidate(prune_ratio=0.4, threads=2), accuracy=0.6)
    assert follow_ups([*trials[:-1], far], far, SPACE, floor=0.89) == []  # far below the floor
    unpruned = record(7, Candidate(placement="ort-cpu", threads=2, batch_size=8))
    assert follow_ups([*trials, unpruned], unpruned, SPACE, floor=0.89) == []  # nothing recovered
    # Stopped after its short recovery, close to the floor but slow as sampled: the faster recipes follow it
    # (they may earn the long recovery); stopped during its validation pass (nothing screened): none.
    screened = dataclasses.replace(
        trials[-1], state="pruned", metrics=None, stopped_early=True, screened={"accuracy": 0.88, "per_sample_ms": 1.5}
    )
    assert follow_ups([*trials[:-1], screened], screened, SPACE, floor=0.89) == queued
    hopeless = dataclasses.replace(screened, screened=None)
    assert follow_ups([*trials[:-1], hopeless], hopeless, SPACE, floor=0.89) == []


def test_a_new_fastest_recipe_is_carried_back_to_the_more_accurate_architectures_built_before():
    slow = dict(placement="torch-cpu", threads=2)
    trials = [
        record(0, Candidate(**slow), ms=2.0, accuracy=0.95),
        record(1, Candidate(prune_ratio=0.2, **slow), ms=1.5, accuracy=0.94),
        record(2, Candidate(prune_ratio=0.2, placement="ort-cpu", threads=2), ms=0.9, accuracy=0.94),
        record(3, Candidate(prune_ratio=0.4, **slow), ms=1.0, accuracy=0.90),  # less accurate than the new point
        record(4, Candidate(prune_ratio=0.2, placement="ort-cpu", threads=1), ms=0.6, accuracy=0.8, drop=0.3),
    ]
    fast = dict(placement="ort-cpu", precision="int8", threads=1, batch_size=8)
    new = record(5, Candidate(prune_ratio=0.4, **fast), ms=0.3, accuracy=0.92)
    trials.append(record(7, Candidate(prune_ratio=0.4, recovery="long", **slow), ms=1.2, accuracy=0.93))  # its own
    queued = carried([*trials, new], new, SPACE)
    built = [SPACE.sample(optuna.trial.FixedTrial(p)) for p in queued]
    # its recipe on the architectures more accurate than it, the fastest first, each once; not on its own, not on
    # the less accurate one, and an infeasible trial (#4) does not count as built
    assert [c.prune_ratio for c in built] == [0.2, 0.0]
    assert {(c.placement, c.precision, c.threads, c.batch_size) for c in built} == {("ort-cpu", "int8", 1, 8)}
    assert carried([*trials, new], new, SPACE, most=1) == queued[:1]
    done = record(6, Candidate(prune_ratio=0.2, **fast), ms=0.5, accuracy=0.93, follow_up_of=5)
    assert carried([*trials, new, done], new, SPACE) == queued[1:]  # measured already: not again
    slower = dataclasses.replace(new, metrics={**new.metrics, "per_sample_ms": 0.95})
    assert carried([*trials, slower], slower, SPACE) == []  # not the fastest: nothing new to carry
    infeasible = dataclasses.replace(new, constraints={"accuracy_drop": 0.5})
    assert carried([*trials, infeasible], infeasible, SPACE) == []


def test_the_account_says_where_the_time_went_and_the_rest_is_overhead():
    trials = [
        record(0, Candidate(), seconds=3.0),
        record(
            1,
            Candidate(prune_ratio=0.4, placement="ort-cpu", precision="int8"),
            seconds=20.0,
            build={"prune": 1.0, "recover": 12.0, "calibrate": 2.0, "export": 1.0},
            steps=30,
        ),
        TrialRecord(
            number=2,
            state="pruned",
            params={},
            candidate=None,
            sampled=None,
            metrics=None,
            constraints={},
            budget_skip=True,
            seconds=0.01,
            started_at=102.0,
        ),
    ]
    spent = costs.account(
        trials,
        {
            "budget_s": 60.0,
            "started_at": 90.0,
            "setup_s": 10.0,
            "remeasure_s": 15.0,
            "wall_s": 55.0,
            "ended": "budget: the trials end here",
        },
    )
    parts = spent["parts"]
    assert parts["recovery"] == 13.0 and parts["calibration"] == 2.0 and parts["export"] == 1.0
    assert parts["accuracy"] == 1.0 and parts["latency"] == 3.0 and parts["setup"] == 10.0
    assert parts["re-measure"] == 15.0
    assert sum(parts.values()) == pytest.approx(55.0)  # the wall time, in full
    assert spent["skipped"] == 1
    text = time_table({"time": spent})
    assert text.splitlines()[0] == "time: 55 s of the 60 s budget (92%), 2 trials:"
    for words in (
        "setup",
        "recovery",
        "calibration",
        "accuracy",
        "latency",
        "re-measure",
        "idle and overhead",
        "1 proposals not started",
        "the trials end here",
    ):
        assert words in text


def test_the_plan_reserves_the_remeasure_and_lends_the_trials_the_rest():
    from tests.recorded import add_measured
    from tuner.study.budget import Plan

    study = optuna.create_study(directions=["maximize", "minimize"])
    # the baseline, alone on the front: 3 s of latency timing (measure_seconds less accuracy_seconds) a process
    metrics = {
        "accuracy": 0.9,
        "per_sample_ms": 1.0,
        "latency_ms": 1.0,
        "measure_seconds": 4.0,
        "accuracy_seconds": 1.0,
    }
    add_measured(study, [0.9, 1.0], metrics, Candidate().to_dict(), baseline=True)
    per_point = costs.PROCESS_S + 3.0
    # two rounds of the one point, and one point more per round that the front may still gain
    assert Plan(100.0, 2).reserve(study) == pytest.approx(4 * per_point)
    assert Plan(100.0, 2).trial_timeout(study, 900.0) == pytest.approx(100.0 - 4 * per_point, abs=1.0)
    assert Plan(100.0, 0).reserve(study) == 0.0  # no re-measure asked: nothing reserved
    assert Plan(None, 3).trial_timeout(study, 900.0) == 900.0 and Plan(None, 3).rounds_that_fit(study) == 3
    assert Plan(100.0, 3).rounds_that_fit(study) == 3
    assert Plan(1.5 * per_point, 3).rounds_that_fit(study) == 1  # what is left fits one round of the three
    assert Plan(0.5 * per_point, 3).rounds_that_fit(study) == 0
