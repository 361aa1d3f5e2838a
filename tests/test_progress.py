"""Long work is told while it runs, and output that is not a terminal gets plain lines, never a bar's frames."""

from __future__ import annotations

import re

import pytest

from tests.conftest import PLAIN_TRIALS
from tuner import progress

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


class Lines(list):
    send = list.append  # the pipe interface a trial's process sends its lines to


def test_a_tracker_tells_long_work_with_an_estimate_and_stays_quiet_on_short_work(monkeypatch):
    now = [0.0]
    lines = Lines()
    monkeypatch.setattr(progress, "_sink", progress._sink)
    progress.send_to(lines)
    tracker = progress.Tracker("short recovery", 100, clock=lambda: now[0])
    for step in range(1, 101):
        now[0] = step * 0.5  # 0.5 s a step: 50 s in all
        tracker(step)
    assert lines[0] == "  short recovery: 20/100 steps, 10 s, about 40 s left"
    assert len(lines) == 5  # one line per 10 s, not one per step
    quiet = progress.Tracker("quick", 10, clock=lambda: 1.0)
    quiet(10)
    assert len(lines) == 5


def test_a_piped_study_prints_one_line_per_trial_and_no_bar_frames(plain_cnn_study):
    r = plain_cnn_study  # the default space's study of the tiny CNN, its output piped
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr and "%|" not in r.stderr  # no tqdm frames
    numbered = [line for line in r.stderr.splitlines() if line.startswith("[") and " trials; pareto " in line]
    # One line per finished trial: each counted one moves the count on, a repeat of a measured candidate (not
    # counted) repeats it and says so.
    counts = [int(line[1 : line.index("/")]) for line in numbered]
    repeats = re.search(r"(\d+) repeats not counted", numbered[-1])
    repeats = int(repeats.group(1)) if repeats else 0
    assert sorted(set(counts)) == list(range(1, PLAIN_TRIALS + 1)) and counts == sorted(counts), r.stderr
    assert len(counts) == PLAIN_TRIALS + repeats, r.stderr
