"""Claims on cache entries (tuner.claims): processes that miss the same entry build it once, the others wait and
reuse it; a claim whose holder is killed expires and the next worker builds the entry. Each on both kinds of
claim: lock files in the cache directory and PostgreSQL advisory locks (the study's storage)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

# One worker's miss of KEY: the build notes its start and its builder, sleeps, then writes the entry's file.
WORKER = """
import os, sys, time
from pathlib import Path
from tuner import logs
from tuner.cache import Cache

root, url, key, sleep, log = Path(sys.argv[1]), sys.argv[2] or None, sys.argv[3], float(sys.argv[4]), sys.argv[5]
def build(out):
    with open(root.parent / "started", "a") as f:
        f.write(f"{os.getpid()}\\n")
    time.sleep(sleep)
    (out / "value.txt").write_text(f"built by {os.getpid()}")
def say(line):
    with open(log, "a") as f:
        f.write(line + "\\n")
logs.install(say)
cache = Cache(root, claims_url=url)
entry = cache.entry(key, build)
print((entry / "value.txt").read_text(), cache.hits, cache.misses)
"""
KEY = "0123456789abcdef0123"


@pytest.fixture(params=["file", pytest.param("postgresql", marks=pytest.mark.slow)])  # slow: a server starts
def claims_url(request) -> str:
    """'' for lock files in the cache directory; a PostgreSQL URL for advisory locks on that server."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else ""


def _start(tmp_path: Path, url: str, sleep: float, name: str) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(tmp_path / "cache"), url, KEY, str(sleep), str(log)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, log


def _wait_for(check, what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _builders(tmp_path: Path) -> list[int]:
    started = tmp_path / "started"
    return [int(line) for line in started.read_text().split()] if started.exists() else []


def test_a_missed_entry_is_built_once_while_the_other_worker_waits(tmp_path, claims_url):
    first, _ = _start(tmp_path, claims_url, 3.0, "first")
    _wait_for(lambda: _builders(tmp_path), "the first worker's build")
    second, second_log = _start(tmp_path, claims_url, 0.0, "second")
    _wait_for(lambda: second_log.exists() and "waiting" in second_log.read_text(), "the second worker to wait")
    out_first, out_second = first.communicate(timeout=60), second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (out_first[1][-2000:], out_second[1][-2000:])
    assert _builders(tmp_path) == [first.pid], "built once, by the claim's holder"
    assert out_first[0].split() == ["built", "by", str(first.pid), "0", "1"]
    assert out_second[0].split() == ["built", "by", str(first.pid), "1", "0"], "the waiter reused it: a hit"
    said = second_log.read_text()
    assert f"another worker ({os.uname().nodename}:{first.pid}) is building it; waiting to reuse it" in said
    assert "reusing what another worker built" in said
    assert not list((tmp_path / "cache" / ".claims").glob("*")), "the claim's file is gone with the claim"


def test_a_killed_holders_claim_expires_and_the_waiter_builds(tmp_path, claims_url):
    holder, _ = _start(tmp_path, claims_url, 600.0, "holder")
    _wait_for(lambda: _builders(tmp_path), "the holder's build")
    waiter, waiter_log = _start(tmp_path, claims_url, 0.0, "waiter")
    _wait_for(lambda: waiter_log.exists() and "waiting" in waiter_log.read_text(), "the waiter to wait")
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=30)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err[-2000:]
    assert _builders(tmp_path) == [holder.pid, waiter.pid], "the killed holder's claim passed to the waiter"
    assert out.split() == ["built", "by", str(waiter.pid), "0", "1"]
    assert "the other worker's build did not finish; building it here" in waiter_log.read_text()
    assert not list((tmp_path / "cache" / ".claims").glob("*"))


def _advisory_holders(url: str) -> list[int]:
    """The process ids of the tuner processes holding an advisory lock on the server (from their connection's
    application_name, ``tuner HOST:PID``)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE 'tuner %'"
                )
            ).all()
    finally:
        engine.dispose()
    return [int(r[0].rsplit(":", 1)[1]) for r in rows]


@pytest.mark.slow
def test_two_workers_on_postgres_train_a_recovery_they_both_meet_once(tmp_path, postgres_url):
    """Two `tuner run` workers on one PostgreSQL study with one --studies-dir (its cache shared): every candidate
    of the space is the same pruned model (batch sizes apart), so both meet its recovery. The first worker's trial
    process is paused while it holds the recovery's claim (whatever the host's load, the second worker then meets
    it mid-training); the second waits, and reuses it once the first goes on and finishes it."""
    import optuna
    import yaml

    from tests.conftest import TINY
    from tuner.pipeline import CLAIM_WAIT

    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "placement": "torch-cpu",
                "precision": "fp32",
                "prune_ratio": 0.5,
                "batch_size": {"choices": [1, 4, 16]},
                "threads": 1,
            }
        )
    )
    args = [
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "40",
        "--recover-steps",
        "80",
        "--studies-dir",
        str(tmp_path / "shared"),
        "--space",
        str(space),
        "--study",
        "claimed",
        "--n-trials",
        "3",
        "--storage",
        postgres_url,
        "--remeasure-rounds",
        "0",
        "--sampler",
        "random",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    logs = [tmp_path / "first.err", tmp_path / "second.err"]

    def start(log: Path) -> subprocess.Popen:
        with open(log, "w") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "tuner", *args], cwd=ROOT, env=env, stderr=err, stdout=subprocess.DEVNULL
            )

    def recovering() -> list[int]:  # a pruned trial runs, and a claim is held: its recovery's (nothing else is)
        try:
            trials = optuna.load_study(study_name="claimed", storage=postgres_url).get_trials(deepcopy=False)
        except KeyError:
            return []
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.number > 0]
        return _advisory_holders(postgres_url) if running else []

    first = start(logs[0])
    _wait_for(recovering, "the first worker's recovery", timeout=240)
    child = recovering()[0]
    os.kill(child, signal.SIGSTOP)  # the first worker's trial process, paused holding the claim
    try:
        assert child in _advisory_holders(postgres_url), "the recovery ended before it could be paused"
        second = start(logs[1])
        _wait_for(
            lambda: "is building it; waiting to reuse it" in logs[1].read_text(),
            "the second worker to wait",
            timeout=240,
        )
    finally:
        os.kill(child, signal.SIGCONT)
    for w in (first, second):
        w.wait(timeout=300)
    errs = [log.read_text() for log in logs]
    assert [first.returncode, second.returncode] == [0, 0], [e[-3000:] for e in errs]
    assert f"another worker ({os.uname().nodename}:{child}) is building it" in errs[1]
    trials = optuna.load_study(study_name="claimed", storage=postgres_url).get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get("baseline")]
    assert len({t.user_attrs["worker"] for t in pruned}) == 2, "both workers ran the pruned model"
    # A recovery is trained by one worker: one that meets another's build waits for it and reuses it. There may be
    # two recoveries (the short screen, and the long one a close candidate earns), each trained by either worker.
    for err in errs:
        for key in re.findall(r"cache entry (\w+): another worker .* waiting to reuse it", err):
            assert f"cache entry {key}: reusing what another worker built" in err, err
    recoveries = list((tmp_path / "shared" / "cache").glob("*/recovery.json"))
    trained = [t.number for t in pruned if "prune" in t.user_attrs["build_seconds"]]  # timed only when it trains
    assert 1 <= len(trained) <= len(recoveries), f"{len(recoveries)} recoveries trained by trials {trained}"
    waited = [t for t in pruned if t.user_attrs["build_seconds"].get(CLAIM_WAIT, 0) > 0]
    assert waited, "the other worker's trial waited for the recovery, then reused it"
