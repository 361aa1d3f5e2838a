"""Long work told while it runs: the baseline's training and a trial's recovery (stage, elapsed, an estimate),
and each stage of a trial (recover, calibrate, accuracy, latency...) that took long, with its time.

A ``Tracker`` sends at most one line per ``EVERY`` seconds to this process's sink: stderr by default; in a
trial's process, the queue its parent drains (``Worker``), so that the parent draws the line beside its progress
bar rather than the child writing over the bar's frames.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

EVERY = 10.0  # seconds between two lines of one piece of work: long work is told, short work stays silent
LONG_STAGE = 5.0  # a stage that took this long is told when it ends (a trial's quick stages stay silent)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_sink: Callable[[str], None] = _stderr


def send_to(pipe: Any) -> None:
    """This process's lines go to ``pipe`` (the writing end of a multiprocessing pipe its parent drains)."""
    global _sink
    _sink = pipe.send


class Tracker:
    """``tracker(done)`` after each unit of ``total``: a line now and then, with an estimate of what is left."""

    def __init__(self, what: str, total: int, unit: str = "steps", clock: Callable[[], float] = time.monotonic):
        self.what, self.total, self.unit, self.clock = what, total, unit, clock
        self.start = self.last = clock()

    def __call__(self, done: int) -> None:
        now = self.clock()
        if now - self.last < EVERY or not done:
            return
        self.last = now
        elapsed = now - self.start
        left = elapsed * (self.total - done) / done
        _sink(f"  {self.what}: {done}/{self.total} {self.unit}, {elapsed:.0f} s, about {left:.0f} s left")


def say(line: str) -> None:
    """One line to this process's sink (a trial's process: its parent draws it beside the progress bar)."""
    _sink(line)


@contextlib.contextmanager
def stage(what: str, clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    """Time a stage of a trial; one line when it ends, if it took ``LONG_STAGE`` seconds or more."""
    start = clock()
    try:
        yield
    finally:
        elapsed = clock() - start
        if elapsed >= LONG_STAGE:
            _sink(f"  {what}: {elapsed:.0f} s")
