"""The suite runs on xdist workers (pyproject's addopts): a test marked ``alone`` overlaps no other test, and a
``once_per_run`` fixture is made once however many workers ask for it. Checked on a two-worker run of a small
generated suite that uses tests/conftest.py's hook and helper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

CONFTEST = "from tests.conftest import pytest_runtest_protocol  # noqa: F401 (the hook under test)\n"
SUITE = """
import json, os, time
from pathlib import Path

import pytest

from tests.conftest import once_per_run

LOG = Path(os.environ["SUITE_LOG"])


def _record(name, start):
    with open(LOG, "a") as f:
        f.write(json.dumps([name, start, time.time(), os.environ["PYTEST_XDIST_WORKER"]]) + "\\n")


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    def make(folder):
        with open(LOG.with_suffix(".made"), "a") as f:
            f.write("x")
        time.sleep(1.0)  # long enough for the other worker to ask meanwhile
        return {"folder": str(folder)}
    return once_per_run(tmp_path_factory, "shared", make)


@pytest.mark.parametrize("i", range(6))
def test_busy(i, shared):
    start = time.time()
    time.sleep(0.3)
    _record(f"busy{i}", start)


@pytest.mark.alone
@pytest.mark.parametrize("i", range(2))
def test_alone(i, shared):
    start = time.time()
    time.sleep(0.5)
    _record(f"alone{i}", start)
"""


def test_alone_tests_overlap_nothing_and_shared_fixtures_are_made_once(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_generated.py").write_text(textwrap.dedent(SUITE))
    log = tmp_path / "log.jsonl"
    outer = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}  # this run's own workers
    env = {**outer, "PYTHONPATH": str(ROOT), "SUITE_LOG": str(log)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "2",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "--basetemp",
            str(tmp_path / "base"),
            str(tmp_path / "test_generated.py"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(runs) == 8 and {w for *_, w in runs} == {"gw0", "gw1"}  # both workers ran tests
    assert (tmp_path / "log.made").read_text() == "x"  # made by one worker, read by the other
    for name, start, end, _ in runs:
        if name.startswith("alone"):
            overlapping = [n for n, s, e, _ in runs if n != name and s < end and start < e]
            assert not overlapping, (name, overlapping)
