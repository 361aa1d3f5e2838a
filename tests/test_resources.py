"""Resources that run out: a full disk before and during a study stops it in one line (exit 74) and leaves it
resumable, the trial that met the full disk run again on resume; the study's database failing is one line too.
The disk is a small tmpfs this test mounts (root only: skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import TINY, run_tuner

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

EXIT_RESOURCE = 74


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Every byte of ``disk`` taken by one file (removed to free the space)."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: nothing left to flush when the disk is full
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue
    return filler


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == EXIT_RESOURCE and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("tuner: error: ")
        and sum(line.startswith("tuner: error") for line in r.stderr.splitlines()) == 1
    )
    return last


def _args(disk: Path, storage: str, n: int, space: Path) -> list[str]:
    return [
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "40",
        "--studies-dir",
        str(disk / "studies"),
        "--storage",
        storage,
        "--study",
        "full",
        "--space",
        str(space),
        "--n-trials",
        str(n),
        "--remeasure-rounds",
        "0",
    ]


def test_a_full_disk_before_a_study_is_one_line(small_disk, tmp_path):
    (small_disk / "studies").mkdir()
    _fill(small_disk)
    r = run_tuner(
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "40",
        "--studies-dir",
        str(small_disk / "studies"),
        "--n-trials",
        "2",
        "--remeasure-rounds",
        "0",
    )
    line = _one_error_line(r)
    assert "full" in line or "no space left" in line, line


def test_a_disk_filling_mid_study_stops_it_and_the_resume_retries_the_trial(small_disk, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "placement": {"choices": ["torch-cpu", "ort-cpu"]},
                "precision": {"per": "placement", "choices": {"torch-cpu": ["fp32"], "ort-cpu": ["int8"]}},
                "batch_size": 1,
                "threads": {"low": 1, "high": "cores"},
            }
        )
    )
    storage = f"sqlite:///{tmp_path / 'full.db'}"  # the database on a disk with room: the cache's disk fills
    first = run_tuner(*_args(small_disk, storage, 1, space))
    assert first.returncode == 0, first.stderr[-3000:]  # the baseline: trained, cached, measured
    filler = _fill(small_disk)
    r = run_tuner(*_args(small_disk, storage, 2, space))
    line = _one_error_line(r)
    assert "no space left on the device" in line and str(small_disk) in line, line
    study = optuna.load_study(study_name="full", storage=storage)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "no space left" in failed[0].user_attrs["error"]
    assert [t.user_attrs.get("retry_of") for t in study.trials if t.state == optuna.trial.TrialState.WAITING] == [
        failed[0].number
    ]
    filler.unlink()
    again = run_tuner(*_args(small_disk, storage, 2, space))
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="full", storage=storage)
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == failed[0].number)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == failed[0].params


def test_a_full_database_disk_is_one_line(small_disk, tmp_path):
    _fill(small_disk)
    r = run_tuner(
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "40",
        "--studies-dir",
        str(tmp_path / "studies"),
        "--storage",
        f"sqlite:///{small_disk / 'study.db'}",
        "--n-trials",
        "2",
        "--remeasure-rounds",
        "0",
    )
    line = _one_error_line(r)
    assert "database" in line and "full" in line, line


def test_a_database_locked_past_its_wait_is_one_line_and_the_study_resumes(tmp_path):
    """Another process holds the SQLite file's write lock past the wait the URL states (?timeout=, 60 s by
    default): one line, exit 74; once the lock is gone the same command resumes."""
    import sqlite3

    db = tmp_path / "locked.db"
    args = [
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "40",
        "--studies-dir",
        str(tmp_path / "studies"),
        "--storage",
        f"sqlite:///{db}?timeout=2",
        "--study",
        "locked",
        "--space",
        "default",
        "--remeasure-rounds",
        "0",
    ]
    assert run_tuner(*args, "--n-trials", "1").returncode == 0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        line = _one_error_line(run_tuner(*args, "--n-trials", "2"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "database is locked" in line and "run the same command to resume" in line, line
    again = run_tuner(*args, "--n-trials", "2")
    assert again.returncode == 0 and "resuming study locked: 1 of 2" in again.stderr, again.stderr[-3000:]
