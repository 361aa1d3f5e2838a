"""A fault inside one trial costs that trial only: a user model that raises for one batch size and hangs for
another still lets the study finish, each bad trial FAILED with its one-line reason, the rest measured."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.conftest import ROOT, run_tuner

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

FAULTY = f"{ROOT / 'tests' / 'faulty_models.py'}:raises_at_8_hangs_at_32"


def test_a_raising_and_a_hanging_trial_fail_alone(tmp_path, studies_dir):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "placement": "torch-cpu",
                "precision": "fp32",
                "prune_ratio": 0.0,
                "fold_bn": False,
                "batch_size": {"choices": [1, 8, 32]},
                "threads": 1,
            }
        )
    )
    r = run_tuner(
        "--model",
        FAULTY,
        "--resolution",
        "16",
        "--train-steps",
        "30",
        "--studies-dir",
        str(studies_dir),
        "--space",
        str(space),
        "--study",
        "faulty",
        "--n-trials",
        "4",
        "--sampler",
        "random",
        "--seed",
        "1",
        "--trial-timeout",
        "20",
        "--remeasure-rounds",
        "0",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    study = optuna.load_study(study_name="faulty", storage=f"sqlite:///{studies_dir}/faulty.db")
    by_batch: dict[int, set[TrialState]] = {}
    reasons: dict[int, str] = {}
    for t in study.trials:
        bs = t.user_attrs["candidate"]["batch_size"]
        by_batch.setdefault(bs, set()).add(t.state)
        if t.state == TrialState.FAIL:
            reasons[bs] = t.user_attrs["error"]
            assert "\n" not in reasons[bs]
    assert by_batch[1] == {TrialState.COMPLETE}  # the baseline and batch 1 were measured
    assert by_batch[8] == {TrialState.FAIL} and "ValueError: this model cannot take a batch of 8" in reasons[8]
    assert by_batch[32] == {TrialState.FAIL} and "no result within 20 s" in reasons[32]
    assert not study.trials[-1].user_attrs.get("crashed")  # a timeout is not retried as a crash


def test_ctrl_c_between_two_trials_stops_the_next_one_as_interrupted(workload):
    """Ctrl-C while the child waits between trials kills it, and the pool is broken before the next trial is even
    submitted: that trial is interrupted (run again on resume), not a traceback (seen once in the Ctrl-C test)."""
    from tuner.candidate import Candidate
    from tuner.worker import TrialInterrupted, Worker

    worker = Worker(workload.spec)
    try:
        assert worker.evaluate(Candidate(threads=1)).metrics["accuracy"] > 0.5
        worker.interrupt()  # the child is idle: nothing runs, yet it is gone
        with pytest.raises(TrialInterrupted, match="Ctrl-C"):
            worker.evaluate(Candidate(threads=1))
    finally:
        worker.close()
