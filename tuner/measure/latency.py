"""Latency statistics, in one place: warm-up, adaptive repeats on a quiet host, median, p95 and the median's CI."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.measure import host

# TUNER_TIMING=quick: every timing window a fifth as long (warm-up kept), for smoke runs and the test suite,
# where timing is most of a small trial's cost. The figures keep their CI, wider; never pick a deployment from them.
QUICK_TIMING = os.environ.get("TUNER_TIMING") == "quick"


def window(seconds: float) -> float:
    """A timing window's length under the timing mode of this process (``QUICK_TIMING``)."""
    return seconds / 5 if QUICK_TIMING else seconds


@dataclass(frozen=True)
class LatencyPolicy:
    warmup: int = 5  # calls before timing: lazy init, allocator and cache warm-up
    warmup_seconds: float = 0.3  # ... and at least this long: a freshly compiled model ran up to 50% slower
    # for its first 0.2-0.3 s (OpenVINO int8, 0.57 vs 0.38 ms), longer than a fast model's 5 calls take
    min_samples: int = 30
    max_samples: int = 100_000  # a memory cap; time and the CI end the timing first
    min_seconds: float = window(1.5)  # observe at least this long, so that a quiet phase of the host can show: slow
    # phases the probe cannot see (+20-30%) came and went for 0.2-1.5 s at a time on the 2-vCPU CI host
    max_seconds: float = window(3.0)  # timing budget per candidate, warm-up excluded
    rel_ci: float = 0.02  # stop once the 95% CI of the median is within +-2% of it
    block_seconds: float = 0.05  # calls timed between two host probes (at least BLOCK_CALLS)
    quiet_host: bool = True  # keep only blocks timed while every CPU ran at full speed (tuner.measure.host)
    max_wait_seconds: float = window(1.0)  # beyond min_seconds, wait this long for a quiet host, then time it as it is


BLOCK_CALLS = 5
MIN_QUIET_SAMPLES = 10  # fewer quiet samples than this when time is up: report the fastest phase seen instead
FAST_CLUSTER = 1.10  # a block within 10% of the fastest block: the host left it alone


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p95_ms: float
    ci_low_ms: float  # 95% distribution-free CI of the median (over block medians where timed in blocks)
    ci_high_ms: float
    mean_ms: float
    std_ms: float
    samples: int
    contended_share: float = 0.0  # share of timed blocks during which the probe found a CPU contended
    quiet: bool = True  # False: no quiet phase came in time; the figures are the fastest phase seen


def quantile_ci(sorted_ms: np.ndarray, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic CI of the ``q`` quantile (no normality assumed; latencies are skewed): the ranks
    n q -+ z sqrt(n q (1 - q)) of the sorted samples."""
    n = len(sorted_ms)
    z = {0.9: 1.645, 0.95: 1.96, 0.99: 2.576}[confidence]
    half = z * math.sqrt(n * q * (1 - q))
    lo = max(0, math.floor(n * q - half))
    hi = min(n - 1, math.ceil(n * q + half))
    return float(sorted_ms[lo]), float(sorted_ms[hi])


def median_ci(sorted_ms: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic CI of the median."""
    return quantile_ci(sorted_ms, 0.5, confidence)


def grouped_quantile(
    samples_ms: list[float] | np.ndarray, q: float, groups: list[list[float]] | None = None
) -> tuple[float, float, float]:
    """The ``q`` quantile of all samples and its 95% CI: over the samples as independent draws, widened to the CI of
    the median of the groups' own quantiles where there are two or more groups (samples timed together share the
    host's state of that moment, so the draws-alone CI is too narrow; the batch means method, as
    ``summarize_latency``)."""
    s = np.sort(np.asarray(samples_ms, dtype=np.float64))
    value = float(np.quantile(s, q))
    lo, hi = quantile_ci(s, q)
    per_group = [float(np.quantile(g, q)) for g in groups or () if len(g)]
    if len(per_group) >= 2:
        glo, ghi = median_ci(np.sort(np.asarray(per_group)))
        lo, hi = min(lo, glo), max(hi, ghi)
    return value, min(lo, value), max(hi, value)


def summarize_latency(
    samples_ms: list[float] | np.ndarray,
    contended_share: float = 0.0,
    quiet: bool = True,
    block_medians_ms: list[float] | None = None,
) -> LatencyStats:
    """One set of call latencies summarized: median, p95, mean, spread and the 95% CI of the median.

    With ``block_medians_ms`` (two or more) the CI is that of the median of the block medians (the batch
    means method): calls timed in one block share the host's state of that moment, so counting each call
    as an independent draw gives a CI far narrower than what a later measurement reproduces."""
    s = np.sort(np.asarray(samples_ms, dtype=np.float64))
    median = float(np.median(s))
    if block_medians_ms is not None and len(block_medians_ms) >= 2:
        lo, hi = median_ci(np.sort(np.asarray(block_medians_ms, dtype=np.float64)))
        lo, hi = min(lo, median), max(hi, median)
    else:
        lo, hi = median_ci(s)
    return LatencyStats(
        median,
        float(np.percentile(s, 95)),
        lo,
        hi,
        float(s.mean()),
        float(s.std(ddof=1)) if len(s) > 1 else 0.0,
        len(s),
        contended_share,
        quiet,
    )


Block = tuple[bool, float, list[float]]  # (host quiet when it began, median, samples) of one block of calls


def _count(blocks: list[Block]) -> int:
    return sum(len(samples) for _, _, samples in blocks)


def _summarize_blocks(blocks: list[Block], contended_share: float, quiet: bool, max_samples: int) -> LatencyStats:
    samples = [x for _, _, block in blocks for x in block][:max_samples]
    return summarize_latency(samples, contended_share, quiet, [median for _, median, _ in blocks])


def _tight(blocks: list[Block], rel_ci: float) -> bool:
    stats = _summarize_blocks(blocks, 0.0, True, _count(blocks))
    return (stats.ci_high_ms - stats.ci_low_ms) / 2 <= rel_ci * stats.median_ms


def time_calls(
    run: Callable[[Any], Any],
    prepared: Any,
    policy: LatencyPolicy = LatencyPolicy(),
    probe: Callable[[], host.HostState] = host.probe,
    threads: int | None = None,
) -> LatencyStats:
    """Time ``run(prepared)`` alone (inputs were prepared beforehand) until the CI is tight.

    Calls are timed in blocks, the host probed before each. With ``quiet_host`` a block counts when
    every CPU it ran on was at full speed, no other process's runnable thread had to share them (host.crowded),
    and the block is not clearly slower (> FAST_CLUSTER) than the
    fastest such block: contention the scalar canary cannot see (memory bandwidth, caches) shows only as
    a slow block. A runtime on ``threads`` CPUs, fewer than the host has, is kept on the quietest ones
    (host.QuietestCpus), then only those need to be at full speed. Stops once the kept blocks' CI is tight
    (after ``min_seconds``) or the budget is spent. With no quiet phase within ``max_wait_seconds`` beyond
    ``min_seconds`` it keeps the fastest phase seen among all blocks instead and reports ``quiet=False``:
    the figure then includes the neighbours' load.
    """
    warm_until = time.perf_counter() + policy.warmup_seconds
    for _ in range(policy.warmup):
        run(prepared)
    while time.perf_counter() < warm_until:
        run(prepared)
    with host.QuietestCpus(threads if policy.quiet_host else None) as cpus:
        return _time_blocks(run, prepared, policy, probe, cpus)


def _time_blocks(
    run: Callable[[Any], Any],
    prepared: Any,
    policy: LatencyPolicy,
    probe: Callable[[], host.HostState],
    cpus: host.QuietestCpus,
) -> LatencyStats:
    blocks: list[Block] = []

    def select(chosen: list[Block]) -> list[Block]:
        return _fast_cluster(chosen, policy.min_samples) if policy.quiet_host else chosen

    timed = 0
    start = time.perf_counter()
    while True:
        state = probe() if policy.quiet_host else None
        in_use = cpus.follow(state) if state is not None else None
        run(prepared)  # untimed: wakes the runtime's threads after the probe (and warms a CPU it moved to)
        block: list[float] = []
        end = time.perf_counter() + policy.block_seconds
        while len(block) < BLOCK_CALLS or time.perf_counter() < end:
            t0 = time.perf_counter_ns()
            run(prepared)
            block.append((time.perf_counter_ns() - t0) / 1e6)
        calm = state is None or (state.quiet_on(in_use) and not state.crowded(in_use))
        blocks.append((calm, float(np.median(block)), block))
        elapsed = time.perf_counter() - start
        timed += len(block)
        if elapsed < min(policy.min_seconds, policy.max_seconds) and timed < policy.max_samples:
            continue  # nothing may stop yet: skip sorting a growing sample list after every block
        quiet = select([b for b in blocks if b[0]])
        waited = elapsed >= policy.min_seconds + policy.max_wait_seconds
        kept = quiet if _count(quiet) >= policy.min_samples or not waited else select(blocks)
        n = _count(kept)
        if n >= policy.min_samples and (
            n >= policy.max_samples
            or elapsed >= policy.max_seconds
            or (elapsed >= policy.min_seconds and _tight(kept, policy.rel_ci))
        ):
            break
        if elapsed >= policy.max_seconds + policy.max_wait_seconds:
            break
    share = 1 - sum(1 for b in blocks if b[0]) / len(blocks)
    if _count(quiet) >= min(MIN_QUIET_SAMPLES, policy.min_samples):
        return _summarize_blocks(quiet, share, True, policy.max_samples)
    return _summarize_blocks(select(blocks), share, False, policy.max_samples)


def _fast_cluster(blocks: list[Block], at_least: int) -> list[Block]:
    """The blocks within FAST_CLUSTER of the fastest block: the host's best phase seen.

    Fastest blocks first, and at least ``at_least`` samples where there are that many: a slow call timed
    in few blocks (5 calls of 14 ms each) can have one lucky block, which alone would leave a handful of
    samples and a figure that the next process does not reproduce."""
    ordered = sorted(blocks, key=lambda b: b[1])
    bar = FAST_CLUSTER * ordered[0][1] if ordered else math.inf
    kept: list[Block] = []
    n = 0
    for block in ordered:
        if block[1] > bar and n >= at_least:
            break
        kept.append(block)
        n += len(block[2])
    return kept
