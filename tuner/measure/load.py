"""Serving under load: drive a session's lanes with many requests at once and record throughput and the latency of
every request (p50 / p95 / p99 with 95% CIs), in a closed loop and an open one.

* Closed loop: ``in_flight`` requests are outstanding all the time; each answered one is issued again at once
  (what OpenVINO's benchmark_app does with ``-nireq``). Its throughput is the candidate's capacity at that
  concurrency, its latency what each of those requests waits, queueing in the server included.
* Open loop: requests arrive at ``rate`` per second at Poisson times (seeded: the same schedule every run) whether
  or not earlier ones were answered, and a request that has to wait counts from its scheduled arrival (a slow
  server is not excused by arrivals held back: no coordinated omission). By default the rate is a share
  (``LoadPolicy.utilisation``) of the closed loop's capacity: the tail a server provisioned with that headroom
  shows under random traffic, which is what a p95 budget is about.

A lane (``Session.serve``) runs one request to completion; there is one worker thread per lane, and requests beyond
the lanes wait in a queue. Where every request in flight has its own lane (the common case) each worker runs its own
closed loop with nothing between two calls but two clock reads; one lane with one request runs in the calling
thread, as the single-stream latency timing does.

The figures cover every request answered, slow ones included: the tail is the point, so nothing is trimmed. The
quiet-host rules apply where they can without trimming: the load runs in windows, the host is probed between them
(probing during one would load the CPUs itself), each window waits for a quiet host (``max_wait_seconds`` in all)
and runs on the quietest CPUs where the candidate uses fewer than the machine has; a window that still began on a
busy host counts, and the record says so (``contended_share``, ``quiet``). Busy: a CPU in use runs slow (the
canary of ``host``), or other threads are runnable that would have to share the CPUs in use by time slices (which
the canary cannot see; ``host.runnable_others``). In the open loop, once a request has waited too long the server
is overloaded: later arrivals are not let in, so the loop stays bounded, and the record says ``overloaded``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.defaults import DEFAULTS
from tuner.errors import ConfigError, MeasurementError
from tuner.measure import host
from tuner.measure.latency import grouped_quantile, window

Lane = Callable[[], Any]
QUANTILES = {"p50": 0.50, "p95": 0.95, "p99": 0.99}
_WAIT_STEP = 0.05  # seconds between host probes while waiting for a quiet host
_CPUS = len(host.ALLOWED) if host.ALLOWED else 1  # the CPUs this process may run on
OVERLOAD_FACTOR = 20  # open loop: a wait of this many closed-loop medians (and max_queue_seconds) is overload


@dataclass(frozen=True)
class LoadPolicy:
    warmup_seconds: float = 0.3  # every lane busy this long first (a freshly compiled model runs slow for a while)
    min_seconds: float = window(1.0)  # each loop runs at least this long under load ...
    max_seconds: float = window(2.0)  # ... and at most this long (waits for a quiet host not counted)
    min_requests: int = 200  # between the two, until this many requests were answered
    # The open loop's p95 is what a budget constrains: it runs until 2,000 requests, at most 5 s, so that the p95
    # rests on the 100 slowest (on 400, measured: a 95% CI of 4.3-9.3 ms around 6.4; on 2,000: 4.7-5.4 around 5.1).
    open_min_requests: int = 2000
    open_max_seconds: float = window(5.0)
    window_seconds: float = 0.25  # the host is probed between windows
    quiet_host: bool = True  # start each window on a quiet host where one comes within max_wait_seconds
    max_wait_seconds: float = window(1.0)
    utilisation: float = DEFAULTS.utilisation  # open loop: arrivals at this share of the closed loop's throughput ...
    open_rate: float | None = None  # ... unless a rate (requests/s) is given: a re-check under a recorded load
    seed: int = 0  # of the Poisson arrival times
    max_queue_seconds: float = 1.0  # open loop: a request waiting longer (and 20 closed-loop medians) = overloaded

    def __post_init__(self) -> None:
        if not 0 < self.utilisation <= 1:  # NaN too
            raise ConfigError(
                f"`0 < utilisation <= 1` must hold (--utilisation: a share of the closed loop's rate), "
                f"but got utilisation={self.utilisation!r}."
            )
        if self.open_rate is not None and not 0 < self.open_rate < math.inf:
            raise ConfigError(
                f"open_rate (--rate) must be a finite number > 0 of requests per second, but got "
                f"open_rate={self.open_rate!r}."
            )


def replaying(metrics: dict[str, Any]) -> LoadPolicy | None:
    """The load a measurement (``Metrics.to_dict()``) was taken under, to take another the same way (None: it was not
    under load): the closed loop at its requests in flight, then the open loop by the same rule, the same share of
    the closed loop's rate (or the same rate, where one was given). The same share, not the rate it came to: a
    fresh process's closed loop that runs a few percent slower would otherwise meet a higher utilisation, whose
    queueing grows the tail far more than the few percent (at half the capacity a wait grows about twice as fast
    as the utilisation), so the figure would not be re-measured but moved."""
    record = metrics.get("load")
    if not isinstance(record, dict):
        return None
    policy = record.get("policy") or {}
    if policy.get("open_rate"):
        return LoadPolicy(open_rate=float(policy["open_rate"]))
    return LoadPolicy(utilisation=float(policy.get("utilisation", LoadPolicy.utilisation)))


@dataclass(frozen=True)
class LoadStats:
    """One loop's figures; latencies are per request (one batch of ``batch_size`` samples)."""

    mode: str  # closed | open
    in_flight: int  # closed: requests outstanding all the time; open: the lanes serving
    rate: float | None  # open: requests/s offered
    issued: int
    answered: int  # every issued request is answered before a loop ends
    seconds: float  # time under load, over all windows
    throughput: float  # samples/s answered
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    ci: dict[str, tuple[float, float]]  # 95% CIs: of p50 / p95 / p99 in ms, of throughput in samples/s
    windows: int
    contended_share: float  # share of windows that began on a busy host: a CPU in use slowed (the canary), or other
    # runnable threads that would share the CPUs in use (host.runnable_others); waiting for a quiet one did not help
    quiet: bool  # False: some window began on a busy host; its requests are in the figures
    others_runnable: int  # the most other runnable threads seen as a window began
    overloaded: bool = False  # open loop: requests waited past the bound, so later arrivals were not let in

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ci"] = {k: list(v) for k, v in self.ci.items()}
        return d


@dataclass(frozen=True)
class _Window:
    latencies_ms: list[float]
    issued: int
    seconds: float
    quiet: bool
    overloaded: bool = False
    others_runnable: int = 0  # other threads runnable when it began


# ---------------------------------------------------------------- one window of each loop


def _run_threads(targets: list[Callable[[], None]], errors: list[BaseException]) -> None:
    """Run each target in a thread of its own (the first in this one), then raise the first error a request met."""
    threads = [threading.Thread(target=t, daemon=True) for t in targets[1:]]
    for t in threads:
        t.start()
    targets[0]()
    for t in threads:
        t.join()
    if errors:
        err = errors[0]
        raise MeasurementError(f"a request failed under load: {type(err).__name__}: {str(err)[:200]}") from err


def _call(lane: Lane, errors: list[BaseException]) -> None:
    """One request; an error is kept (and raised once the window ends), so that no worker dies holding a request."""
    try:
        lane()
    except Exception as err:  # noqa: BLE001 - a runtime's error ends the measurement, reported by _run_threads
        errors.append(err)


def closed_window(lanes: list[Lane], in_flight: int, seconds: float) -> tuple[list[float], int, bool]:
    """``in_flight`` requests outstanding for ``seconds`` (then the last ones answered): (latencies in ms, issued,
    False: a closed loop cannot overload)."""
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    errors: list[BaseException] = []
    if in_flight == len(lanes):  # a lane per request: each worker runs its own loop, nothing in between
        per_lane: list[list[float]] = [[] for _ in lanes]

        def loop(lane: Lane, out: list[float]) -> Callable[[], None]:
            def run() -> None:
                while True:
                    t0 = clock()
                    if t0 >= end:
                        return
                    _call(lane, errors)
                    out.append((clock() - t0) / 1e6)

            return run

        _run_threads([loop(lane, out) for lane, out in zip(lanes, per_lane)], errors)
        found = [ms for out in per_lane for ms in out]
        return found, len(found), False
    # More requests than lanes: the extra ones wait in the queue, their waiting in their latency.
    tokens: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    start = clock()
    for _ in range(in_flight):
        tokens.put(start)
    retired = itertools.count(1)  # next() is atomic under the GIL
    issued = itertools.count(in_flight + 1)
    found: list[float] = []

    def worker(lane: Lane) -> Callable[[], None]:
        def run() -> None:
            while True:
                t_issue = tokens.get()
                if t_issue is None:
                    return
                _call(lane, errors)
                t_done = clock()
                found.append((t_done - t_issue) / 1e6)
                if t_done < end:
                    next(issued)
                    tokens.put(t_done)  # the client sends its next request at once
                elif next(retired) == in_flight:  # the last one outstanding: release every worker
                    for _ in lanes:
                        tokens.put(None)

        return run

    _run_threads([worker(lane) for lane in lanes], errors)
    return found, next(issued) - 1, False


def open_window(
    lanes: list[Lane], rate: float, seconds: float, seed: int, max_wait_ms: float = float("inf")
) -> tuple[list[float], int, bool]:
    """Requests arriving at Poisson times, ``rate`` per second, for ``seconds`` (then the backlog served to the last):
    (latencies in ms, issued, overloaded). The workers take the arrivals in order, each when it is free (one
    queue, first come first served); there is no dispatcher thread to hand them over. Once a request has waited
    ``max_wait_ms`` the server is overloaded: no later arrival is let in and the backlog is served, so that the
    window stays bounded. A request that arrived while every worker was
    busy counts from its scheduled arrival, its wait in the queue included; one that found a worker idle counts from
    the moment it started (that worker slept until its arrival, and a late wake-up, some 30-80 us here, is the load
    generator's, not the server's)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 16)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < seconds]
    clock = time.perf_counter_ns
    start = clock()
    arrivals = (start + (offsets * 1e9).astype(np.int64)).tolist()
    taken = itertools.count()  # next() is atomic under the GIL: each arrival goes to one worker
    found: list[float] = []
    errors: list[BaseException] = []
    last = [len(arrivals)]  # arrivals let in: cut short once one waited too long
    max_wait = max_wait_ms * 1e6

    def worker(lane: Lane) -> Callable[[], None]:
        def run() -> None:
            _fine_timer_slack()
            while True:
                i = next(taken)
                if i >= last[0]:
                    return
                t0 = arrivals[i]
                ahead = t0 - clock()
                if -ahead > max_wait:
                    last[0] = min(last[0], i + 1)  # overloaded: this one is served, no later one let in
                if ahead > 0:  # idle until it arrives: sleep (releasing the GIL), then count from the start
                    time.sleep(ahead / 1e9)
                    t0 = clock()
                _call(lane, errors)
                found.append((clock() - t0) / 1e6)

        return run

    _run_threads([worker(lane) for lane in lanes], errors)
    return found, len(found), last[0] < len(arrivals)


def _fine_timer_slack() -> None:
    """Let this thread's sleeps end within ~1 us of their deadline rather than Linux's default 50 us slack (measured
    here: a 0.3 ms sleep overran by 77 us at the default, 33 us at 1 us). Elsewhere: nothing to do."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)  # nanoseconds; this thread only
    except (OSError, AttributeError):
        pass


_PR_SET_TIMERSLACK = 29
_libc: Any = None


# ---------------------------------------------------------------- windows on a quiet host, then the figures


def _windows(
    run: Callable[[int], tuple[list[float], int, bool]],
    policy: LoadPolicy,
    cpus: host.QuietestCpus,
    probe: Callable[[], host.HostState],
    used: int,
) -> list[_Window]:
    windows: list[_Window] = []
    waited = 0.0

    def quiet_now() -> tuple[bool, int]:
        """The CPUs in use at full speed (the canary), and no other runnable thread that would have to share them."""
        state = probe()
        others = host.runnable_others() or 0
        return state.quiet_on(cpus.follow(state)) and others + used <= _CPUS, others

    while True:
        quiet, others = quiet_now() if policy.quiet_host else (True, 0)
        while not quiet and waited < policy.max_wait_seconds:
            time.sleep(_WAIT_STEP)
            waited += _WAIT_STEP
            quiet, others = quiet_now()
        start = time.perf_counter()
        latencies, issued, overloaded = run(len(windows))
        windows.append(_Window(latencies, issued, time.perf_counter() - start, quiet, overloaded, others))
        seconds = sum(w.seconds for w in windows)
        answered = sum(len(w.latencies_ms) for w in windows)
        if seconds >= policy.max_seconds or (seconds >= policy.min_seconds and answered >= policy.min_requests):
            return windows


def summarize_load(
    mode: str, windows: list[_Window], batch_size: int, in_flight: int, rate: float | None = None
) -> LoadStats:
    """The figures over every request of every window (quantiles' CIs widened by the windows' spread)."""
    groups = [w.latencies_ms for w in windows]
    every = [ms for g in groups for ms in g]
    if not every:
        raise MeasurementError(f"no request was answered in {sum(w.seconds for w in windows):.1f} s under load")
    quantiles = {name: grouped_quantile(every, q, groups) for name, q in QUANTILES.items()}
    seconds = sum(w.seconds for w in windows)
    per_window = [batch_size * len(w.latencies_ms) / w.seconds for w in windows if w.seconds > 0]
    throughput = batch_size * len(every) / seconds
    seen = [*per_window, throughput]
    spread = (min(seen), max(seen)) if len(per_window) >= 2 else (throughput, throughput)
    contended = sum(not w.quiet for w in windows) / len(windows)
    return LoadStats(
        mode=mode,
        in_flight=in_flight,
        rate=rate,
        issued=sum(w.issued for w in windows),
        answered=len(every),
        seconds=seconds,
        throughput=throughput,
        requests_per_second=len(every) / seconds,
        p50_ms=quantiles["p50"][0],
        p95_ms=quantiles["p95"][0],
        p99_ms=quantiles["p99"][0],
        mean_ms=float(np.mean(every)),
        max_ms=float(np.max(every)),
        ci={**{k: v[1:] for k, v in quantiles.items()}, "throughput": spread},
        windows=len(windows),
        contended_share=contended,
        quiet=contended == 0,
        others_runnable=max(w.others_runnable for w in windows),
        overloaded=any(w.overloaded for w in windows),
    )


def run_load(
    lanes: list[Lane],
    batch_size: int,
    in_flight: int,
    threads: int | None,
    policy: LoadPolicy = LoadPolicy(),
    probe: Callable[[], host.HostState] = host.probe,
) -> tuple[LoadStats, LoadStats]:
    """The closed loop at ``in_flight`` requests, then the open loop at ``policy``'s rate, on ``lanes``.
    ``threads``: the CPUs the candidate uses (threads x streams), to keep it on the quietest ones when fewer than
    the machine has (None: no pinning)."""
    if in_flight < len(lanes):
        raise MeasurementError(f"{in_flight} requests in flight cannot keep {len(lanes)} lanes busy")
    with host.QuietestCpus(threads if policy.quiet_host else None) as cpus:
        closed_window(lanes, in_flight, policy.warmup_seconds)
        used = threads or _CPUS
        closed = summarize_load(
            "closed",
            _windows(lambda i: closed_window(lanes, in_flight, policy.window_seconds), policy, cpus, probe, used),
            batch_size,
            in_flight,
        )
        rate = policy.open_rate or policy.utilisation * closed.requests_per_second
        max_wait = max(1000 * policy.max_queue_seconds, OVERLOAD_FACTOR * closed.p50_ms)
        open_policy = dataclasses.replace(
            policy, min_requests=policy.open_min_requests, max_seconds=policy.open_max_seconds
        )
        opened = summarize_load(
            "open",
            _windows(
                lambda i: open_window(lanes, rate, policy.window_seconds, policy.seed + i, max_wait),
                open_policy,
                cpus,
                probe,
                used,
            ),
            batch_size,
            len(lanes),
            rate,
        )
    return closed, opened
