"""The report's layer-by-layer figure: the last ``tuner explain``'s costliest layers, the pick against the
baseline. plotly is imported only when drawing."""

from __future__ import annotations

from typing import Any

from tuner.report.data import ReportInfo

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
