"""The report's figure of a study under load: throughput against p95, the p95 budget, the pick ringed
(its data: ``tuner.report.serving``). plotly is imported only when drawing."""

from __future__ import annotations

from typing import Any

from tuner.candidate import label
from tuner.report.axes import PALETTE, SYMBOLS, axis, axis_title
from tuner.report.data import ReportInfo


def serving_figure(info: ReportInfo) -> Any | None:
    """A study under load: each trial's throughput against its p95 under the same load, the study's p95 budget as a
    line, the pick (the feasible trial serving the most) ringed."""
    s = info.serving
    if s is None or not s.points:
        return None
    import plotly.graph_objects as go

    colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted({q.params["placement"] for q in s.points}))}
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
                        SYMBOLS.get(q.params["precision"], "circle") + ("" if q.feasible else "-open") for q in group
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
        xaxis=dict(title=axis_title(s.throughput)),
        yaxis=axis(s.p95, ys),
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
