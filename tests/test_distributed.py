"""Many workers on one PostgreSQL study, a worker killed mid-trial, a crashing candidate, kill -9 and resume.

PostgreSQL is real: .ci/run installs Debian's package; conftest's ``postgres_url`` starts a throwaway server on
loopback. Without the package the tests skip locally and fail under CI (CI never skips them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import ROOT, TINY, run_tuner
from tuner.study.counts import count_trials

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

SPACE = {
    "placement": {"choices": ["torch-cpu", "ort-cpu"]},
    "precision": {"per": "placement", "choices": {"torch-cpu": ["fp32"], "ort-cpu": ["fp32", "int8"]}},
    "prune_ratio": {"choices": [0.0, 0.5]},
    "batch_size": {"choices": [1, 4, 16]},
    "graph_opt": {"choices": ["basic", "all"], "when": {"placement": ["ort-cpu"]}},
    "threads": 1,
}


def _args(
    tmp_path: Path, studies_dir: Path, study: str, n_trials: int, model: str = "conv_net", space: dict | None = None
) -> list[str]:
    path = tmp_path / f"space-{study}.yaml"
    path.write_text(yaml.safe_dump(space or SPACE, sort_keys=False))
    return [
        "--model",
        f"{TINY}:{model}",
        "--resolution",
        "16",
        "--train-steps",
        "80",
        "--recover-steps",
        "20",
        "--studies-dir",
        str(studies_dir),
        "--space",
        str(path),
        "--study",
        study,
        "--n-trials",
        str(n_trials),
        "--heartbeat",
        "1",
        "--max-retries",
        "2",
        "--remeasure-rounds",
        "0",
    ]


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _wait_for_running_trial(study_name: str, storage: str, pids: list[int], timeout: float = 300) -> tuple[int, int]:
    """(trial number, worker pid) of a trial (not the baseline) that one of ``pids`` is running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            for t in optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False):
                pid = int(t.user_attrs.get("worker", ":0").rsplit(":", 1)[1])
                if t.state == optuna.trial.TrialState.RUNNING and pid in pids and t.number > 0:
                    return t.number, pid
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.1)
    raise AssertionError("no worker was seen running a trial")


def _running_of(study_name: str, storage: str, pid: int) -> list[int]:
    """Trials left RUNNING by the (dead) worker ``pid``: those it was killed in the middle of."""
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    return [
        t.number
        for t in trials
        if t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("worker", "").endswith(f":{pid}")
    ]


def _check_accounted(study: optuna.Study, n_trials: int, killed: int) -> None:
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), "no duplicate trial numbers"
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    assert study.trials[killed].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retries and retries[0].state.is_finished(), "the killed trial was run again"
    assert retries[0].params == study.trials[killed].params
    assert count_trials(study)[0] >= n_trials
    assert sum(bool(t.user_attrs.get("baseline")) and t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 1


def test_four_workers_on_postgres_one_killed(tmp_path, studies_dir, postgres_url):
    n_trials = 14
    args = [*_args(tmp_path, studies_dir, "pg-shared", n_trials), "--storage", postgres_url]
    workers = [_spawn(args) for _ in range(4)]
    victims: list[int] = []
    for _ in range(3):  # a trial can finish between being seen RUNNING and the kill: then kill another worker
        _, pid = _wait_for_running_trial("pg-shared", postgres_url, [w.pid for w in workers if w.pid not in victims])
        os.kill(pid, signal.SIGKILL)
        victims.append(pid)
        next(w for w in workers if w.pid == pid).wait()
        left = _running_of("pg-shared", postgres_url, pid)
        if left:
            killed = left[0]
            break
    else:
        pytest.fail("no worker could be killed in the middle of a trial")
    outputs = [w.communicate(timeout=600)[1] for w in workers]
    assert all(w.returncode == (-signal.SIGKILL if w.pid in victims else 0) for w in workers), [
        e[-3000:] for w, e in zip(workers, outputs) if w.returncode not in (0, -signal.SIGKILL)
    ]
    assert all("Traceback" not in e for e in outputs)
    assert all("s3cret" not in e for e in outputs) and any("postgres:***@" in e for e in outputs)
    study = optuna.load_study(study_name="pg-shared", storage=postgres_url)
    _check_accounted(study, n_trials, killed)


_OPEN = """
import sys
from tuner.study.storage import make_storage
make_storage(sys.argv[1], 10, 2)
"""


def test_workers_started_together_on_an_empty_database_all_open_it(postgres_url):
    """Each creates Optuna's tables; PostgreSQL refused all but one of four (a unique violation), every time."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("CREATE DATABASE together"))
    engine.dispose()
    url = f"{postgres_url.rsplit('/', 1)[0]}/together"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPEN, url],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(4)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e[-500:] for e in errs if "Error" in e]


def test_kill_9_then_same_command_completes(tmp_path, studies_dir):
    args = _args(tmp_path, studies_dir, "killed", 6)
    storage = f"sqlite:///{studies_dir}/killed.db"
    for _ in range(5):  # a trial can finish between being seen RUNNING and the kill: then run and kill again
        proc = _spawn(args)
        _wait_for_running_trial("killed", storage, [proc.pid])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = _running_of("killed", storage, proc.pid)
        if left:
            killed = left[0]
            break
    else:
        pytest.fail("the run could not be killed in the middle of a trial")
    r = run_tuner(*args)
    assert r.returncode == 0, r.stderr
    _check_accounted(optuna.load_study(study_name="killed", storage=storage), 6, killed)


def test_a_crashing_candidate_fails_one_trial_and_the_study_goes_on(tmp_path, studies_dir):
    space = {"placement": "torch-cpu", "batch_size": {"choices": [1, 8]}, "threads": 1}
    args = _args(tmp_path, studies_dir, "crashing", 6, model="crashing_net", space=space)
    r = run_tuner(*args, "--json", "--sampler", "random", "--seed", "1")
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="crashing", storage=f"sqlite:///{studies_dir}/crashing.db")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("the trial's process" in t.user_attrs["error"] for t in failed)
    assert any("SIGSEGV" in t.user_attrs["error"] for t in failed)
    assert all(t.params["batch_size"] == 8 for t in failed)
    assert any(t.state == optuna.trial.TrialState.COMPLETE and t.params.get("batch_size") == 1 for t in study.trials)
    assert count_trials(study)[0] == 6
