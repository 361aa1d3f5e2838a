"""What the report's figures share: axis titles, log and percent axes with ticks that read apart, and the
placements' colours and the precisions' marker symbols."""

from __future__ import annotations

import math
from typing import Any

_AXIS_TITLES = {
    "per_sample_ms": "latency per sample, ms",
    "latency_ms": "latency per batch, ms",
    "latency_p95_ms": "p95 latency per batch, ms",
    "throughput": "throughput, samples/s",
    "size_mb": "artifact size, MB",
    "macs": "MACs per sample",
    "params": "parameters",
    "load_throughput": "samples/s, closed loop",
    "open_throughput": "samples/s, open loop",
    "load_p95_ms": "p95 per request under load, ms",
    "open_p95_ms": "p95 per request, open loop, ms",
}
_LOG_METRICS = {
    "per_sample_ms",
    "latency_ms",
    "latency_p95_ms",
    "size_mb",
    "macs",
    "params",
    "load_p50_ms",
    "load_p95_ms",
    "load_p99_ms",
    "open_p50_ms",
    "open_p95_ms",
    "open_p99_ms",
}
LATENCY_CI = {"per_sample_ms"}  # the metric whose 95% CI the markers' bars show

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
SYMBOLS = {"fp32": "circle", "fp16": "diamond", "bf16": "square", "int8": "triangle-up"}


def axis_title(metric: str, accuracy: str = "top-1 accuracy") -> str:
    """An axis or figure title; ``accuracy``: what the study calls accuracy (top-1, or the user's metric by name)."""
    if metric in ("accuracy", "accuracy_drop"):
        return accuracy + (" drop" if metric == "accuracy_drop" else "")
    return _AXIS_TITLES.get(metric, metric)


def axis(metric: str, values: list[float], accuracy: str = "top-1 accuracy") -> dict[str, Any]:
    """A log axis with plain 1-2-5 ticks for latencies and sizes; accuracy in percent with enough decimals that
    no two ticks read the same."""
    title = axis_title(metric, accuracy) + (
        " (log; bars: within-process 95% CI of the median)"
        if metric in LATENCY_CI
        else " (log)"
        if metric in _LOG_METRICS
        else ""
    )
    if metric in _LOG_METRICS and values and min(values) > 0:
        return dict(title=title, type="log", **_log_ticks(values))
    if metric in ("accuracy", "accuracy_drop") and values:
        return dict(title=title, **_percent_ticks(values))
    return dict(title=title)


def _percent_ticks(values: list[float]) -> dict[str, Any]:
    """Ticks set explicitly at a 1-2-5 step (about five per span), labelled in percent with the step's decimals,
    so that no two ticks read the same whatever plotly would choose for the figure's size (a tickformat alone
    does not fix plotly's own tick spacing: 98.9%, 98.9%, 98.8%, ...)."""
    lo, hi = min(values), max(values)
    span = hi - lo if hi > lo else 0.001  # one value: ticks 0.02 points apart around it
    raw = span / 5
    exponent = math.floor(math.log10(raw))
    step = next(m * 10.0**exponent for m in (1, 2, 5, 10) if m * 10.0**exponent >= raw * (1 - 1e-9))
    decimals = max(0, -math.floor(math.log10(step * 100) + 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [k * step for k in range(first - (first == last), last + 1 + (first == last))]
    # The range is set too: plotly's own for points that (nearly) coincide is far wider than the ticks.
    return {
        "tickvals": ticks,
        "ticktext": [f"{100 * t:.{decimals}f}%" for t in ticks],
        "range": [ticks[0] - step / 2, ticks[-1] + step / 2],
    }


def _log_ticks(values: list[float]) -> dict[str, Any]:
    """1-2-5 ticks labelled in plain ms (plotly's own log ticks label only the decades)."""
    values = [v for v in values if v > 0]
    if not values:
        return {}
    lo, hi = min(values), max(values)
    ticks = [
        m * 10.0**k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)
    ]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    return {"tickvals": inside, "ticktext": [f"{t:g}" for t in inside]} if len(inside) >= 2 else {}
