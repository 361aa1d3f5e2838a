"""The report's page: the trial table (as records, CSV and a sortable HTML table) and the one self-contained
HTML page around the figures and findings (plotly.js inline: it works offline)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tuner.candidate import int8_settings
from tuner.report.data import ReportInfo
from tuner.report.figures import hypervolume_figure, importance_figure, pareto_figure
from tuner.report.guardrails import class_table_html
from tuner.report.layer_figure import layers_figure
from tuner.report.serving_figure import serving_figure
from tuner.report.thumbnails import thumbnails_html
from tuner.report.trials import trial_table

_COLUMNS = (
    "trial",
    "state",
    "flags",
    "placement",
    "precision",
    "int8",
    "prune",
    "batch",
    "fold_bn",
    "graph_opt",
    "threads",
    "streams",
    "requests",
    "accuracy",
    "drop (pts)",
    "ms/sample",
    "within-process 95% CI",
    "re-measured ms/sample",
    "re-measure diff %",
    "speedup",
    "p95 ms/batch",
    "samples/s",
    "load samples/s",
    "load p95 ms",
    "open samples/s",
    "open p95 ms",
    "MB",
    "executed",
    "note",
)


def table_rows(info: ReportInfo) -> list[dict[str, Any]]:
    """The HTML table's cells (what a reader sorts by; the CSV is ``trial_table``'s, machine-named columns)."""
    out = []
    for r in info.trials:
        c, m = r.params, r.metrics
        lo, hi = r.ms_ci if r.complete else (None, None)
        flags = [
            f
            for f, on in (("baseline", r.baseline), ("pareto", r.pareto), ("infeasible", r.complete and not r.feasible))
            if on
        ]
        if r.duplicate_of is not None:
            flags.append(f"dup of #{r.duplicate_of}")
        if r.remeasured_ms is not None and not (r.remeasure or {}).get("within_5pct"):
            flags.append("re-measure >5% off")
        out.append(
            {
                "trial": r.number,
                "state": r.state,
                "flags": " ".join(flags),
                "placement": c.get("placement"),
                "precision": c.get("precision"),
                "int8": int8_settings(c),
                "prune": c.get("prune_ratio"),
                "batch": c.get("batch_size"),
                "fold_bn": c.get("fold_bn"),
                "graph_opt": c.get("graph_opt"),
                "threads": m.get("threads", c.get("threads")),
                "streams": c.get("streams"),
                "requests": m.get("requests", c.get("requests")),
                "accuracy": m.get("accuracy"),
                "drop (pts)": m.get("accuracy_drop"),
                "ms/sample": m.get("per_sample_ms"),
                "ci_low": lo,
                "ci_high": hi,
                "re-measured ms/sample": r.remeasured_ms,
                "re-measure diff %": 100 * r.remeasured_diff if r.remeasured_ms is not None else None,
                "speedup": r.speedup,
                "p95 ms/batch": m.get("latency_p95_ms"),
                "samples/s": m.get("throughput"),
                "load samples/s": m.get("load_throughput"),
                "load p95 ms": m.get("load_p95_ms"),
                "open samples/s": m.get("open_throughput"),
                "open p95 ms": m.get("open_p95_ms"),
                "MB": m.get("size_mb"),
                "executed": m.get("executed_precision"),
                "note": r.note,
            }
        )
    return out


def write_csv(info: ReportInfo, path: str | Path) -> Path:
    """The trial table (``trial_table``: the columns of ``TuneResult.to_dataframe()``) as CSV."""
    import pandas as pd

    path = Path(path)
    pd.DataFrame.from_records(trial_table(info.trials)).to_csv(path, index=False)
    return path


def _cell(value: Any, kind: str) -> str:
    if value is None or value == "":
        return '<td data-sort=""></td>'
    shown = {
        "pct": lambda v: f"{v:.2%}",
        "pts": lambda v: f"{v:+.2f}",
        "ms": lambda v: f"{v:.4f}",
        "x": lambda v: f"{v:.2f}x",
        "int": lambda v: f"{v:,.0f}",
        "mb": lambda v: f"{v:.3f}",
    }.get(kind, str)(value)
    sort = value if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    return f'<td data-sort="{html.escape(str(sort))}">{html.escape(shown)}</td>'


def _table_html(info: ReportInfo) -> str:
    kinds = {
        "accuracy": "pct",
        "drop (pts)": "pts",
        "ms/sample": "ms",
        "re-measured ms/sample": "ms",
        "re-measure diff %": "pts",
        "speedup": "x",
        "p95 ms/batch": "ms",
        "samples/s": "int",
        "MB": "mb",
        "load samples/s": "int",
        "load p95 ms": "ms",
        "open samples/s": "int",
        "open p95 ms": "ms",
    }
    head = "".join(
        f'<th title="click to sort">{html.escape(info.metric if c == "accuracy" else c)}</th>' for c in _COLUMNS
    )
    body = []
    for rec, r in zip(table_rows(info), info.trials):
        cells = []
        for col in _COLUMNS:
            if col == "within-process 95% CI":
                cells.append(
                    _cell(None, "")
                    if rec["ci_low"] is None
                    else f'<td data-sort="{rec["ci_low"]}">{rec["ci_low"]:.4f}-{rec["ci_high"]:.4f}</td>'
                )
            else:
                cells.append(_cell(rec[col], kinds.get(col, "")))
        cls = " ".join(
            c
            for c, on in (("pareto", r.pareto), ("baseline", r.baseline), ("muted", not r.complete or not r.feasible))
            if on
        )
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    return (
        f'<div class="scroll"><table id="trials"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;color:#222;
     padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9em} ul.findings li{margin:4px 0}
table{border-collapse:collapse;font-size:.82em;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
.scroll{overflow-x:auto}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0;user-select:none}
th.asc:after{content:" \\25B2"} th.desc:after{content:" \\25BC"}
td:nth-child(-n+5),th:nth-child(-n+5),td:last-child,th:last-child{text-align:left}
tr.pareto{background:#eef7ee} tr.baseline{background:#fff7d6} tr.muted{color:#888}
.note{color:#777;font-size:.9em} table.classes{width:auto}
.flips{display:flex;flex-wrap:wrap;gap:8px} figure.flip{margin:0;font-size:.8em;width:120px}
figure.flip img{image-rendering:pixelated;display:block}
"""

_SORT_JS = """
document.querySelectorAll('#trials th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var asc = !th.classList.contains('asc');
    table.querySelectorAll('th').forEach(function (h) { h.classList.remove('asc', 'desc'); });
    th.classList.add(asc ? 'asc' : 'desc');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      if (x === '' && y !== '') return 1;
      if (y === '' && x !== '') return -1;
      var nx = parseFloat(x), ny = parseFloat(y);
      var cmp = (!isNaN(nx) && !isNaN(ny) && isFinite(x) && isFinite(y)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? cmp : -cmp;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _slug(title: str) -> str:
    return "-".join(title.lower().split())


def render_html(info: ReportInfo) -> str:
    serving = serving_figure(info)
    not_yet = (
        f"Not profiled yet: `tuner explain --study {info.study}` profiles the pick and the baseline with each "
        "runtime's own profiler, and a report written after it shows where their time goes here."
    )
    layer_notes = [not_yet] if info.layers is None else [f"tuner explain: {f}" for f in info.layers.get("findings", [])]
    figures = [
        ("Pareto front", pareto_figure(info), []),
        *([("Serving under load", serving, [])] if serving else []),
        ("Layer by layer", layers_figure(info), layer_notes),
        ("Hypervolume history", hypervolume_figure(info), []),
        ("Parameter importances", importance_figure(info), info.importance_notes),
    ]
    parts = []
    first = True
    for title, fig, notes in figures:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if fig is not None:
            parts.append(
                fig.to_html(
                    full_html=False,
                    include_plotlyjs=first,
                    div_id=f"figure-{_slug(title)}",
                    config={"displaylogo": False, "responsive": True},
                )
            )
            first = False
        parts.extend(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    hw = info.hardware
    wl = info.workload
    states = ", ".join(f"{n} {s}" for s, n in sorted(info.states.items()))
    meta = (
        f"{len(info.trials)} trials ({states}); objectives: "
        f"{', '.join(f'{d} {n}' for n, d in info.objectives.items())}; accuracy is {info.metric}, the reference's "
        + (
            f"{info.reference_accuracy:.2%} on {info.validation_images} validation images"
            if info.reference_accuracy is not None
            else "unknown"
        )
    )
    machine = f"{hw.get('cpu', '?')}, {hw.get('cores', '?')} cores" + (f", {hw['gpu']}" if hw.get("gpu") else "")
    libs = ", ".join(f"{k} {v}" for k, v in (hw.get("libraries") or {}).items())
    workload = ", ".join(f"{k}={v}" for k, v in wl.items() if v is not None)
    findings_html = "".join(f"<li>{html.escape(f)}</li>" for f in info.findings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tuner report: {html.escape(info.study)}</title>
<style>{_STYLE}</style></head><body>
<h1>Study {html.escape(info.study)}</h1>
<p class="meta">{html.escape(meta)}<br>machine: {html.escape(machine)}; {html.escape(libs)}<br>
workload: {html.escape(workload)}</p>
<h2>Findings</h2><ul class="findings">{findings_html}</ul>
{class_table_html(info)}
{thumbnails_html(info, info.flips, info.flips_note)}
{"".join(parts)}
<h2>Trials</h2><p class="note">Click a column heading to sort. Green: feasible Pareto front; yellow: baseline;
grey: failed, refused or breaking a constraint.</p>
{_table_html(info)}
<script>{_SORT_JS}</script>
</body></html>
"""
