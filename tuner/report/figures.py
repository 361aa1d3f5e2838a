"""The report's figures, drawn from its data (``ReportInfo``): the study's front over its two objectives, the
hypervolume history and parameter importances. plotly is imported only here, only when drawing."""

from __future__ import annotations

import math
from typing import Any

from tuner.candidate import label
from tuner.report.data import PARAMS, ReportInfo, TrialRow, group_by

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
_LATENCY_CI = {"per_sample_ms"}  # the metric whose 95% CI the markers' bars show

_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_SYMBOLS = {"fp32": "circle", "fp16": "diamond", "bf16": "square", "int8": "triangle-up"}


def _hover(r: TrialRow, reference: float | None, accuracy: str = "top-1 accuracy") -> str:
    m, c = r.metrics, r.params
    lo, hi = m.get("latency_ci_ms", [m["latency_ms"]] * 2)
    slo, shi = r.ms_ci
    lines = [
        f"<b>trial #{r.number}</b>"
        + (" (baseline)" if r.baseline else "")
        + (" Pareto" if r.pareto else "")
        + ("" if r.feasible else " infeasible")
    ]
    lines += [f"{k}: {c[k]}" for k in PARAMS if k in c]
    lines += [
        f"{accuracy}: {m['accuracy']:.2%}"
        + (f" (drop {m.get('accuracy_drop', 0):+.2f} pts)" if reference is not None else ""),
        f"per sample: {m['per_sample_ms']:.4f} ms (within-process 95% CI {slo:.4f}-{shi:.4f})",
        f"per batch: {m['latency_ms']:.4f} ms (within-process 95% CI {lo:.4f}-{hi:.4f}), p95 {m['latency_p95_ms']:.4f}",
        f"throughput: {m['throughput']:.0f}/s, n={m['samples']}",
        f"size {m['size_mb']:.3f} MB, {m['params']:,} params, {m['macs']:,} MACs",
        f"executed {m['executed_precision']}, {m['threads']} threads",
    ]
    if r.speedup:
        lines.append(f"speedup vs baseline: {r.speedup:.2f}x")
    if r.remeasured_ms is not None:
        e, bs = r.remeasure or {}, m.get("batch_size") or c.get("batch_size") or 1
        spread = (
            f" ({e['min_ms'] / bs:.4f}-{e['max_ms'] / bs:.4f} over {e.get('rounds_used')} rounds)"
            if e.get("min_ms") is not None and e.get("max_ms") is not None
            else ""
        )
        lines.append(
            f"re-measured: {r.remeasured_ms:.4f} ms/sample{spread}, {100 * r.remeasured_diff:+.1f}% vs the "
            "study" + (", outside its CI" if e.get("outside_ci") else "")
        )
    if r.duplicate_of is not None:
        lines.append(f"same configuration as #{r.duplicate_of}")
    return "<br>".join(lines)


def pareto_figure(info: ReportInfo) -> Any:
    """The completed trials over the study's two objectives (second on x), the front ringed, the baseline starred."""
    import plotly.graph_objects as go

    xm, ym = info.axes
    done = [
        r
        for r in info.completed
        if isinstance(r.metrics.get(xm), (int, float)) and isinstance(r.metrics.get(ym), (int, float))
    ]

    def xs(rows: list[TrialRow]) -> list[float]:
        return [float(r.metrics[xm]) for r in rows]

    def ys(rows: list[TrialRow]) -> list[float]:
        return [float(r.metrics[ym]) for r in rows]

    def bars(rows: list[TrialRow]) -> dict[str, Any] | None:
        if xm not in _LATENCY_CI:
            return None
        return dict(
            type="data",
            symmetric=False,
            array=[r.ms_ci[1] - r.ms for r in rows],
            arrayminus=[r.ms - r.ms_ci[0] for r in rows],
            thickness=1,
            width=0,
        )

    colors = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(sorted({r.params["placement"] for r in done}))}
    fig = go.Figure()
    for (placement, precision), g in sorted(
        group_by(done, lambda r: (r.params["placement"], r.params["precision"])).items()
    ):
        error = bars(g)
        fig.add_trace(
            go.Scatter(
                x=xs(g),
                y=ys(g),
                mode="markers",
                name=f"{placement} {precision}",
                text=[_hover(r, info.reference_accuracy, info.metric) for r in g],
                hovertemplate="%{text}<extra></extra>",
                error_x={**error, "color": colors[placement]} if error else None,
                marker=dict(
                    color=colors[placement],
                    symbol=[_SYMBOLS.get(precision, "circle") + ("" if r.feasible else "-open") for r in g],
                    size=10,
                    line=dict(width=1, color=colors[placement]),
                    opacity=0.85,
                ),
            )
        )
    front = [r for r in (info.row(n) for n in info.pareto) if r in done]
    if front:
        fig.add_trace(
            go.Scatter(
                x=xs(front),
                y=ys(front),
                mode="lines+markers",
                name="Pareto front",
                line=dict(color="black", width=1.5, shape="hv", dash="dot"),
                hoverinfo="skip",
                marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(width=2, color="black")),
            )
        )
    base = [r for r in done if r.number == info.baseline]
    if base:
        b = base[0]
        fig.add_trace(
            go.Scatter(
                x=xs(base),
                y=ys(base),
                mode="markers+text",
                name="baseline",
                text=["baseline"],
                textposition="top center",
                hovertext=[_hover(b, info.reference_accuracy, info.metric)],
                hovertemplate="%{hovertext}<extra></extra>",
                marker=dict(symbol="star", size=20, color="gold", line=dict(width=1, color="black")),
            )
        )
    fig.update_layout(
        title=f"{_title(ym, info.metric).capitalize()} vs {_title(xm, info.metric)} (filled: feasible; "
        "open: breaks a constraint; ringed: the study's Pareto front)",
        xaxis=_axis(
            xm,
            xs(done) + ([r.ms_ci[0] for r in done] + [r.ms_ci[1] for r in done] if xm in _LATENCY_CI else []),
            info.metric,
        ),
        yaxis=_axis(ym, ys(done), info.metric),
        legend=dict(title="placement precision"),
        template="plotly_white",
        height=560,
        margin=dict(t=60, l=70, r=20, b=60),
    )
    return fig


def _title(metric: str, accuracy: str = "top-1 accuracy") -> str:
    """An axis or figure title; ``accuracy``: what the study calls accuracy (top-1, or the user's metric by name)."""
    if metric in ("accuracy", "accuracy_drop"):
        return accuracy + (" drop" if metric == "accuracy_drop" else "")
    return _AXIS_TITLES.get(metric, metric)


def _axis(metric: str, values: list[float], accuracy: str = "top-1 accuracy") -> dict[str, Any]:
    """A log axis with plain 1-2-5 ticks for latencies and sizes; accuracy in percent with enough decimals that
    no two ticks read the same."""
    title = _title(metric, accuracy) + (
        " (log; bars: within-process 95% CI of the median)"
        if metric in _LATENCY_CI
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


def hypervolume_figure(info: ReportInfo) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=[n for n, _ in info.hypervolume],
            y=[v for _, v in info.hypervolume],
            mode="lines+markers",
            name="hypervolume",
            line=dict(shape="hv"),
        )
    )
    ref = info.hypervolume_reference
    xm, ym = info.axes
    fig.update_layout(
        title=f"Hypervolume of the feasible front, {ym} × {xm}"
        + (f" (reference point {ref[1]:.4g}, {ref[0]:.4g})" if ref else ""),
        xaxis_title="trial",
        yaxis_title="hypervolume",
        template="plotly_white",
        height=360,
        margin=dict(t=60, l=70, r=20, b=50),
    )
    return fig


def importance_figure(info: ReportInfo) -> Any | None:
    if not info.importances:
        return None
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = list(info.importances)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"{n} ({info.objectives.get(n, '')})" for n in names])
    for i, name in enumerate(names, start=1):
        imp = sorted(info.importances[name].items(), key=lambda kv: kv[1])
        fig.add_trace(
            go.Bar(
                x=[v for _, v in imp],
                y=[k for k, _ in imp],
                orientation="h",
                name=name,
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=i,
        )
    fig.update_layout(
        title="Parameter importance per objective (fANOVA over completed trials)",
        template="plotly_white",
        height=360,
        margin=dict(t=80, l=100, r=20, b=40),
    )
    return fig


LAYER_VIEW_ROWS = 15  # the costliest layers drawn (the CSV of `tuner explain --json` has every one)


def layers_figure(info: ReportInfo) -> Any | None:
    """The last ``tuner explain``: each of the costliest layers' time per sample in the explained trial (the pick)
    and in the one it was held against (the baseline), in the order the baseline ran them; hover: share, executed
    precision, what changed."""
    view = info.layers
    if not view or not view.get("rows"):
        return None
    import plotly.graph_objects as go

    rows = view["rows"]
    costliest = sorted(rows, key=lambda r: -max(r["ms"] or 0.0, r["against_ms"] or 0.0))[:LAYER_VIEW_ROWS]
    shown = [r for r in rows if r in costliest][::-1]  # plotly draws the first category at the bottom
    fig = go.Figure()
    sides = [("", f"#{view['trial']} {view['label']}", "#2ca02c")]
    if view.get("against") is not None:
        sides.append(("against_", f"#{view['against']} {view['against_label']}", "#7f7f7f"))
    for prefix, name, color in sides:
        fig.add_trace(
            go.Bar(
                y=[r["module"] for r in shown],
                x=[r[f"{prefix}ms"] or 0.0 for r in shown],
                orientation="h",
                name=name,
                marker=dict(color=color),
                hovertemplate="%{text}<extra></extra>",
                text=[_layer_hover(r, prefix, name) for r in shown],
                textposition="none",
            )
        )
    outside = "; ".join(
        f"#{n}: {c['outside_ms'] / c['batch_size']:.3f} ms/sample outside the layers"
        for n, c in ((view["trial"], view.get("profile")), (view.get("against"), view.get("baseline")))
        if c
    )
    fig.update_layout(
        title=f"Layer by layer: the {len(shown)} costliest layers, ms per sample ({outside})",
        barmode="group",
        xaxis_title="ms per sample (the runtime's own profiler)",
        template="plotly_white",
        height=max(320, 28 * len(shown) + 140),
        legend=dict(orientation="h", y=-0.15),
        margin=dict(t=60, l=160, r=20, b=80),
    )
    return fig


def _layer_hover(r: dict[str, Any], prefix: str, name: str) -> str:
    ms, share, precision = r[f"{prefix}ms"], r[f"{prefix}share"], r[f"{prefix}precision"]
    if ms is None:
        return f"<b>{r['module']}</b><br>{name}: not in this build" + (f" ({r['changed']})" if r["changed"] else "")
    return "<br>".join(
        [
            f"<b>{r['module']}</b> ({name})",
            f"{ms:.4f} ms/sample, {share:.0%} of the call",
            f"runs {precision}",
            *([r["changed"]] if r["changed"] else []),
        ]
    )


def serving_figure(info: ReportInfo) -> Any | None:
    """A study under load: each trial's throughput against its p95 under the same load, the study's p95 budget as a
    line, the pick (the feasible trial serving the most) ringed."""
    s = info.serving
    if s is None or not s.points:
        return None
    import plotly.graph_objects as go

    colors = {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(sorted({q.params["placement"] for q in s.points}))}
    fig = go.Figure()
    for placement in sorted(colors):
        group = [q for q in s.points if q.params["placement"] == placement]
        fig.add_trace(
            go.Scatter(
                x=[q.throughput for q in group],
                y=[q.p95_ms for q in group],
                mode="markers",
                name=placement,
                text=[_serving_hover(q, s.throughput, s.p95) for q in group],
                hovertemplate="%{text}<extra></extra>",
                marker=dict(
                    color=colors[placement],
                    size=10,
                    line=dict(width=1, color=colors[placement]),
                    symbol=[
                        _SYMBOLS.get(q.params["precision"], "circle") + ("" if q.feasible else "-open") for q in group
                    ],
                ),
            )
        )
    best = [q for q in s.points if q.number == s.best]
    if best:
        fig.add_trace(
            go.Scatter(
                x=[best[0].throughput],
                y=[best[0].p95_ms],
                mode="markers",
                name="the pick",
                hoverinfo="skip",
                marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(width=2, color="black")),
            )
        )
    if s.budget_ms is not None:
        fig.add_hline(
            y=s.budget_ms,
            line=dict(color="#d62728", dash="dash"),
            annotation_text=f"p95 budget {s.budget_ms:g} ms",
            annotation_position="top left",
        )
    ys = [q.p95_ms for q in s.points] + ([s.budget_ms] if s.budget_ms is not None else [])
    fig.update_layout(
        title=f"Throughput vs p95 under load ({s.throughput} and {s.p95}; filled: feasible, open: "
        "breaks a constraint; ringed: the pick)",
        xaxis=dict(title=_title(s.throughput)),
        yaxis=_axis(s.p95, ys),
        legend=dict(title="placement"),
        template="plotly_white",
        height=520,
        margin=dict(t=60, l=70, r=20, b=60),
    )
    return fig


def _serving_hover(q: Any, throughput: str, p95: str) -> str:
    c = q.params
    return "<br>".join(
        [
            f"<b>trial #{q.number}</b>" + (" (baseline)" if q.baseline else ""),
            label(c),
            (
                f"streams {c['streams']}, requests {c['requests'] or c['streams']}, batch {c['batch_size']}, "
                f"threads {c['threads'] or 'shared'}"
            ),
            f"{throughput}: {q.throughput:.0f} samples/s",
            f"{p95}: {q.p95_ms:.3f} ms",
        ]
    )
