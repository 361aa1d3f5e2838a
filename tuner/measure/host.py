"""Is each CPU running at full speed right now? A canary probe, so that latency is timed on a quiet host.

Cloud vCPUs share physical cores with other tenants. Measured on this project's 2-vCPU VM: each vCPU
independently switches, for seconds at a time, between full speed and ~1.9x slower (most likely a busy SMT
sibling on the host), which moved one model's latency between 1.08 and 1.65 ms within one process and spread
fresh-process medians by 50%. No statistic over a contended window recovers the candidate's own cost, so
``time_calls`` asks this probe before each block of calls and keeps the blocks timed while every CPU was
at full speed.

A candidate that runs on fewer threads than there are CPUs is kept on the quietest ones (``QuietestCpus``):
one vCPU was seen contended for tens of minutes while the other stayed at full speed, and a single-threaded
model that the scheduler moves between them gives figures no later process reproduces. Its blocks then count
when the CPUs it runs on are at full speed.

The canary is a fixed pure-Python loop run pinned to each CPU in turn (min of a few repeats: the first
one after a migration pays for waking the CPU). Full speed is the fastest canary this process has seen,
or one handed over from an earlier process (``remember``): a fresh process that starts in a contended
phase would otherwise take that phase for full speed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection
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
    cpus: tuple[int, ...] = ()  # the CPU of each canary reading (empty where CPUs cannot be told apart)
    others: int = 0  # threads of other processes runnable as it was probed (``runnable_others``)

    def slowdown_on(self, cpus: Collection[int] | None = None) -> float:
        """How much slower than full speed the slowest of ``cpus`` (default: every CPU) is now (1.0 = quiet)."""
        readings = [ms for cpu, ms in zip(self.cpus, self.canary_ms) if cpu in cpus] if cpus and self.cpus else []
        return max(readings or self.canary_ms) / self.reference_ms

    @property
    def slowdown(self) -> float:
        return self.slowdown_on()

    def quiet_on(self, cpus: Collection[int] | None = None) -> bool:
        return self.slowdown_on(cpus) <= SLOW

    @property
    def quiet(self) -> bool:
        return self.quiet_on()

    def crowded(self, cpus: Collection[int] | None = None) -> bool:
        """Other processes' runnable threads and the ones ``cpus`` hold (default: every CPU) outnumber the CPUs:
        some share a CPU by time slices, which the canary cannot see (a shared CPU is not a slower one). Measured
        here: a 2-thread torch matmul loop in another process took a tiny CNN on 2 threads from 0.134 to 76 ms a
        call (each of its parallel regions waited a time slice for its descheduled thread), canary 1.2x."""
        total = len(self.cpus) or len(self.canary_ms)
        return self.others + (len(cpus) if cpus else total) > total

    def quietest(self, n: int) -> tuple[int, ...]:
        """The ``n`` CPUs whose canary ran fastest, in CPU order."""
        ranked = sorted(zip(self.canary_ms, self.cpus))
        return tuple(sorted(cpu for _, cpu in ranked[:n]))


def _canary() -> float:
    start = time.perf_counter_ns()
    x = 0
    for i in range(CANARY_LOOPS):
        x += i * i
    return (time.perf_counter_ns() - start) / 1e6


def _cpus() -> tuple[int, ...] | None:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux: probe wherever the thread runs
        return None


ALLOWED = _cpus()  # the CPUs this process may run on, as given at start (before any pinning below)


def probe() -> HostState:
    """Time the canary on each CPU (this thread pinned to it in turn, then given its CPUs back)."""
    global _fastest_ms
    time.sleep(IDLE_SECONDS)
    if ALLOWED is None:
        readings = [min(_canary() for _ in range(REPEATS))]
    else:
        readings = []
        before = os.sched_getaffinity(0)
        try:
            for cpu in ALLOWED:
                os.sched_setaffinity(0, {cpu})  # pid 0 = this thread only
                readings.append(min(_canary() for _ in range(REPEATS)))
        finally:
            os.sched_setaffinity(0, before)
    fastest = min(readings)
    if _fastest_ms is None or fastest < _fastest_ms:
        _fastest_ms = fastest
    return HostState(tuple(readings), _fastest_ms, ALLOWED or (), runnable_others() or 0)


def pin_process(cpus: Collection[int]) -> None:
    """Move every thread of this process (the runtime's pools included) onto ``cpus``."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(
            ProcessLookupError, PermissionError
        ):  # a thread that just ended, or one we may not move
            os.sched_setaffinity(int(tid), cpus)


class QuietestCpus:
    """Keeps a candidate timed on ``threads`` CPUs, fewer than the process may use, on the quietest ones.

    ``follow(state)`` after each probe: where the CPUs in use went slow and others are faster, every thread
    moves there. Returns the CPUs in use (None: all of them, nothing pinned). Leaving the ``with`` block
    gives every thread all the process's CPUs back."""

    def __init__(self, threads: int | None):
        usable = ALLOWED is not None and os.path.isdir("/proc/self/task")
        self.n = threads if usable and threads and threads < len(ALLOWED or ()) else None
        self.current: tuple[int, ...] | None = None

    def follow(self, state: HostState) -> tuple[int, ...] | None:
        if self.n is None or not state.cpus:
            return None
        if self.current is None or not state.quiet_on(self.current):
            best = state.quietest(self.n)
            if best != self.current and (
                self.current is None or state.slowdown_on(best) < state.slowdown_on(self.current)
            ):
                pin_process(best)
                self.current = best
        return self.current

    def __enter__(self) -> QuietestCpus:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.current is not None and ALLOWED is not None:
            pin_process(ALLOWED)
            self.current = None


def runnable_others() -> int | None:
    """Threads of other processes runnable on this machine right now: ``procs_running`` of /proc/stat less this
    process's own running threads (a runtime's pool spins on after a call: measured here, torch's for 5 ms and ONNX
    Runtime's past 20 ms). The canary cannot see a CPU shared by time slices, since a shared CPU is not a slower
    one; this count can: more runnable threads than free CPUs means that some wait for one. None where it cannot be
    read (not Linux)."""
    try:
        own = _own_running()
        with open("/proc/stat") as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("procs_running "))
        return max(0, total - max(own, _own_running()))  # the larger count: one of ours may spin at either read
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _own_running() -> int:
    """This process's threads in state R (the asking one included), from /proc/self/task/*/stat."""
    running = 0
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that just ended
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
            end = stat.rfind(b")")  # the name, in parentheses, may hold spaces and parentheses
            running += stat[end + 2 : end + 3] == b"R"
    return running


def reference_ms() -> float | None:
    """The full-speed canary time known to this process, to hand to a later one (``remember``)."""
    return _fastest_ms


def remember(reference: float | None) -> None:
    """Take full speed as measured by an earlier process on this machine (the faster one wins)."""
    global _fastest_ms
    if reference and reference > 0 and (_fastest_ms is None or reference < _fastest_ms):
        _fastest_ms = float(reference)
