"""Latency statistics, in one place: warm-up, adaptive repeats, median, p95 and the median's CI."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class LatencyPolicy:
    warmup: int = 5  # calls before timing: lazy init, allocator and cache warm-up
    min_samples: int = 30
    max_samples: int = 1000
    max_seconds: float = 3.0  # timing budget per candidate, warm-up excluded
    rel_ci: float = 0.02  # stop once the 95% CI of the median is within +-2% of it


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p95_ms: float
    ci_low_ms: float  # 95% distribution-free confidence interval of the median
    ci_high_ms: float
    mean_ms: float
    std_ms: float
    samples: int


def median_ci(sorted_ms: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic CI of the median (no normality assumed; latencies are skewed)."""
    n = len(sorted_ms)
    z = {0.9: 1.645, 0.95: 1.96, 0.99: 2.576}[confidence]
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half))
    return float(sorted_ms[lo]), float(sorted_ms[hi])


def summarize(samples_ms: list[float] | np.ndarray) -> LatencyStats:
    s = np.sort(np.asarray(samples_ms, dtype=np.float64))
    lo, hi = median_ci(s)
    return LatencyStats(float(np.median(s)), float(np.percentile(s, 95)), lo, hi, float(s.mean()),
                        float(s.std(ddof=1)) if len(s) > 1 else 0.0, len(s))


def time_calls(run: Callable[[Any], Any], prepared: Any, policy: LatencyPolicy = LatencyPolicy()) -> LatencyStats:
    """Time ``run(prepared)`` alone (inputs were prepared beforehand) until the CI is tight."""
    for _ in range(policy.warmup):
        run(prepared)
    samples: list[float] = []
    deadline = time.perf_counter() + policy.max_seconds
    while len(samples) < policy.max_samples:
        start = time.perf_counter_ns()
        run(prepared)
        samples.append((time.perf_counter_ns() - start) / 1e6)
        if len(samples) >= policy.min_samples and len(samples) % 10 == 0:
            if time.perf_counter() > deadline:
                break
            s = np.sort(samples)
            lo, hi = median_ci(s)
            if (hi - lo) / 2 <= policy.rel_ci * float(np.median(s)):
                break
    return summarize(samples)
