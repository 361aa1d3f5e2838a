"""The report's figures, drawn from its data (``ReportInfo``): the study's front over its two objectives, the
hypervolume history and parameter importances (the layers' and the serving figure: ``layer_figure``,
``serving_figure``; their axes and markers: ``axes``). plotly is imported only here, only when drawing."""

from __future__ import annotations

from typing import Any

from tuner.report.axes import LATENCY_CI, PALETTE, SYMBOLS, axis, axis_title
from tuner.report.data import PARAMS, ReportInfo, TrialRow, group_by


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
        if xm not in LATENCY_CI:
            return None
        return dict(
            type="data",
            symmetric=False,
            array=[r.ms_ci[1] - r.ms for r in rows],
            arrayminus=[r.ms - r.ms_ci[0] for r in rows],
            thickness=1,
            width=0,
        )

    colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted({r.params["placement"] for r in done}))}
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
                    symbol=[SYMBOLS.get(precision, "circle") + ("" if r.feasible else "-open") for r in g],
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
        title=f"{axis_title(ym, info.metric).capitalize()} vs {axis_title(xm, info.metric)} (filled: feasible; "
        "open: breaks a constraint; ringed: the study's Pareto front)",
        xaxis=axis(
            xm,
            xs(done) + ([r.ms_ci[0] for r in done] + [r.ms_ci[1] for r in done] if xm in LATENCY_CI else []),
            info.metric,
        ),
        yaxis=axis(ym, ys(done), info.metric),
        legend=dict(title="placement precision"),
        template="plotly_white",
        height=560,
        margin=dict(t=60, l=70, r=20, b=60),
    )
    return fig


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
