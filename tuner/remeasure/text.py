"""The re-measure as text: one row per trial (study vs re-measured, flags), the figures under load, the share
that agrees."""

from __future__ import annotations

from tuner.remeasure.outcome import RemeasureSummary
from tuner.table import aligned


def format_remeasure(summary: RemeasureSummary) -> str:
    """The re-measurement as a table: one row per trial, then the share that agrees within 5%."""
    rows = [("trial", "placement/precision/bs", "study ms/sample", "re-measured ms/sample (min-max)", "diff %", "flag")]
    for e in summary.entries:
        bs = e.batch_size
        c = e.candidate
        tag = f"#{e.number}" + (" base" if e.baseline else "") + ("" if e.pareto else " (not Pareto)")
        what = f"{c.get('placement')}/{c.get('precision')}/{bs}"
        study = f"{e.study_per_sample_ms:.4f}"
        if e.median_ms is None:
            rows.append((tag, what, study, "-", "-", f"error: {e.error}"[:80]))
            continue
        now = f"{e.median_ms / bs:.4f} ({e.min_ms / bs:.4f}-{e.max_ms / bs:.4f})"  # type: ignore[operator]
        flags = [] if e.within_5pct else [">5% off"]
        if e.outside_ci:
            flags.append("outside CI")
        if e.error:
            flags.append(f"{len(e.round_ms)}/{summary.rounds} rounds")
        if not e.study_quiet:
            flags.append("study timed on a contended host")
        if e.contended_rounds:
            flags.append(f"{e.contended_rounds} contended rounds")
        diff = f"{100 * e.rel_diff:+.1f}"  # type: ignore[operator]
        rows.append((tag, what, study, now, diff, ", ".join(flags) or "ok"))
    lines = aligned(rows) + _load_lines(summary)
    head = (
        f"Latency re-measured in fresh processes ({summary.rounds} interleaved rounds, a contended one run again; "
        "median of the quiet rounds' medians"
        + ("" if summary.hardware_matches else "; NOTE: the study ran on other hardware")
        + "):"
    )
    if summary.fraction_within_5pct is None:
        tail = "no Pareto point could be re-measured"
    else:
        n = len(summary.pareto_points)
        tail = (
            f"{round(summary.fraction_within_5pct * n)} of {n} Pareto points within 5% of the study's figure "
            f"({summary.fraction_within_5pct:.0%}); {summary.fraction_outside_ci:.0%} outside the study's 95% CI"
        )
        if len(summary.quiet) < n:
            q = summary.quiet
            tail += (
                f"\n{len(q)} of {n} timed on a quiet host (the study and the rounds used)"
                + (f", {round(summary.fraction_within_5pct_quiet * len(q))} of them within 5%" if q else "")
                + " (the host was contended by other tenants during the rest; see tuner/measure/host.py)"
            )
    return "\n".join([head, *lines, tail])


def _load_lines(summary: RemeasureSummary) -> list[str]:
    """Per point re-measured under load: the study's and the re-measured (median) figures of each loop."""
    lines = []
    for e in summary.measured:
        if not e.load:
            continue
        parts = [
            f"{what} {e.load[m]['study']:{fmt}} -> {e.load[m]['median']:{fmt}} "
            f"({100 * e.load[m]['rel_diff']:+.1f}%" + ("" if e.load[m]["within_10pct"] else ", >10% off") + ")"
            for m, what, fmt in (
                ("load_throughput", "samples/s", ".0f"),
                ("load_p95_ms", "p95 ms", ".3f"),
                ("open_throughput", "open loop samples/s", ".0f"),
                ("open_p95_ms", "p95 ms", ".3f"),
            )
        ]
        host = e.load["host"]
        lines.append(
            f"  #{e.number} under load, median of {host['rounds']} rounds: "
            + ", ".join(parts)
            + (f"; {host['contended_rounds']} rounds on a contended host" if host["contended_rounds"] else "")
        )
    return ["Under load (closed loop, then the open loop at the study's share of its rate):", *lines] if lines else []
