"""Is each CPU running at full speed right now? A canary probe, so that latency is timed on a quiet host.

Cloud vCPUs share physical cores with other tenants. Measured on this project's 2-vCPU VM: each vCPU
independently switches, for seconds at a time, between full speed and ~1.9x slower (most likely a busy SMT
sibling on the host), which moved one model's latency between 1.08 and 1.65 ms within one process and spread
fresh-process medians by 50%. No statistic over a contended window recovers the candidate's own cost, so
``time_calls`` asks this probe before each block of calls and keeps the blocks timed while every CPU was
at full speed.

The canary is a fixed pure-Python loop run pinned to each CPU in turn (min of a few repeats: the first
one after a migration pays for waking the CPU). Full speed is the fastest canary this process has seen,
or one handed over from an earlier process (``remember``): a fresh process that starts in a contended
phase would otherwise take that phase for full speed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

CANARY_LOOPS = 3000  # ~0.13 ms on a 2020s x86 core: cheap next to a timing block
REPEATS = 3
IDLE_SECONDS = 0.002  # let the runtime's spinning worker threads go to sleep first: they would slow the canary
SLOW = 1.35  # a CPU slower than this x full speed is contended (contention measured here: ~1.9x)

_fastest_ms: float | None = None  # full speed: the fastest canary seen in this process (or remembered)


@dataclass(frozen=True)
class HostState:
    canary_ms: tuple[float, ...]  # per CPU this process may run on
    reference_ms: float  # full speed, as known when probed

    @property
    def slowdown(self) -> float:
        """How much slower than full speed the slowest CPU is right now (1.0 = quiet)."""
        return max(self.canary_ms) / self.reference_ms

    @property
    def quiet(self) -> bool:
        return self.slowdown <= SLOW


def _canary() -> float:
    start = time.perf_counter_ns()
    x = 0
    for i in range(CANARY_LOOPS):
        x += i * i
    return (time.perf_counter_ns() - start) / 1e6


def _cpus() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: probe wherever the thread runs
        return None


def probe() -> HostState:
    """Time the canary on each CPU (this thread pinned to it in turn, then given its CPUs back)."""
    global _fastest_ms
    time.sleep(IDLE_SECONDS)
    cpus = _cpus()
    if cpus is None:
        readings = [min(_canary() for _ in range(REPEATS))]
    else:
        readings = []
        try:
            for cpu in cpus:
                os.sched_setaffinity(0, {cpu})  # pid 0 = this thread only
                readings.append(min(_canary() for _ in range(REPEATS)))
        finally:
            os.sched_setaffinity(0, cpus)
    fastest = min(readings)
    if _fastest_ms is None or fastest < _fastest_ms:
        _fastest_ms = fastest
    return HostState(tuple(readings), _fastest_ms)


def reference_ms() -> float | None:
    """The full-speed canary time known to this process, to hand to a later one (``remember``)."""
    return _fastest_ms


def remember(reference: float | None) -> None:
    """Take full speed as measured by an earlier process on this machine (the faster one wins)."""
    global _fastest_ms
    if reference and reference > 0 and (_fastest_ms is None or reference < _fastest_ms):
        _fastest_ms = float(reference)
