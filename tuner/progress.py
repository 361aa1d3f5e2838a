"""Long work told while it runs: the baseline's training and a trial's recovery (stage, elapsed, an estimate).

A ``Tracker`` sends at most one line per ``EVERY`` seconds to this process's sink: stderr by default; in a
trial's process, the queue its parent drains (``Worker``), so that the parent draws the line beside its progress
bar rather than the child writing over the bar's frames.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

EVERY = 10.0  # seconds between two lines of one piece of work: long work is told, short work stays silent


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
