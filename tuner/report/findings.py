"""The report's findings in words: a small set of generic rules over the trial table, each stating only what
the data shows. Comparisons use the fastest trial of each side within a matched group and call a difference
real only when the 95% CIs of the two medians do not overlap and it is at least MIN_EFFECT."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict

from tuner import results
from tuner.report.compare import faster as _faster
from tuner.report.compare import fastest as _fastest
from tuner.report.compare import pts as _pts
from tuner.report.compare import times as _x
from tuner.report.compression import compression_findings
from tuner.report.data import ReportInfo, TrialRow, group_by
from tuner.report.guardrails import guardrail_findings


def findings(info: ReportInfo) -> list[str]:
    """A small set of generic rules over the trial table; each states only what the data shows.

    Comparisons use the fastest trial of each side within a matched group (the other search
    knobs, fold_bn / graph_opt / threads, are taken at their best) and call a difference real only
    when the 95% CIs of the two medians do not overlap.
    """
    rows = [r for r in info.completed if r.duplicate_of is None]
    out: list[str] = [info.reference_warning] if info.reference_warning else []
    if not rows:
        return [*out, "no trial completed yet: nothing to compare."]
    out += _best_vs_baseline(info, rows)
    out += guardrail_findings(info, rows)
    out += _placements_at_equal_accuracy(info, rows)
    out += _precision_rule(rows)
    out += _pruning_rule(rows)
    out += _batch_rule(rows)
    out += _executed_precision_rule(rows)
    out += _mixed_precision_rule(rows)
    out += compression_findings(rows)
    out += _remeasure_rule(info, rows)
    out += _bookkeeping(info)
    return out


def _best_vs_baseline(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    pick = results.fastest_feasible(r.point for r in rows)
    if pick is None:
        return ["no completed trial met the constraints."]
    best = info.row(pick.point.number)
    if info.serving is not None:
        return _serving_rule(info, best)
    if info.baseline is None or best.number == info.baseline:
        return [
            f"the fastest feasible trial is {best.label()} at {best.ms:.3f} ms/sample"
            + (
                " — the baseline itself: nothing searched beat it."
                if best.number == info.baseline
                else "; no speedup: the study has no completed baseline trial to compare with."
            )
        ]
    base = info.row(info.baseline)
    drop = base.accuracy - best.accuracy
    speed = (
        f"{best.speedup or base.ms / best.ms:.1f}x faster than" if _faster(best, base) else "no measurably faster than"
    )
    return [
        f"the fastest feasible trial, {best.label()}, runs at {best.ms:.3f} ms/sample: {speed} the baseline "
        f"(#{base.number}, {base.ms:.3f} ms/sample), "
        + (
            f"{_pts(drop)} below its accuracy."
            if drop > 1e-9
            else f"{_pts(-drop)} above its accuracy."
            if drop < -1e-9
            else "at the same accuracy."
        )
    ]


def _serving_rule(info: ReportInfo, best: TrialRow) -> list[str]:
    """A study under load: the feasible trial serving the most, how, against the baseline and the best single-stream
    batch-1 trial within the same budget."""
    s = info.serving
    assert s is not None
    m, c = best.metrics, best.params

    def served(r: TrialRow) -> str:
        return f"{float(r.metrics[s.throughput]):.0f} samples/s at p95 {float(r.metrics[s.p95]):.3f} ms"

    budget = f" within the p95 budget of {s.budget_ms:g} ms" if s.budget_ms is not None else ""
    out = [
        (
            f"under load, the feasible trial serving the most{budget} is {best.label()}: {served(best)} "
            f"({m.get('streams', 1)} streams x {m['threads']} threads, {m.get('requests', 1)} requests in flight, "
            f"batch {c['batch_size']}; {s.throughput})."
        )
    ]
    if info.baseline is not None and best.number != info.baseline and best.speedup:
        out.append(
            f"that is {best.speedup:.1f}x the baseline's throughput (#{info.baseline}: "
            f"{served(info.row(info.baseline))})."
        )
    single = [
        info.row(q.number)
        for q in s.within_budget()
        if q.feasible
        and q.number != best.number
        and (q.params["streams"], q.params["requests"] or q.params["streams"], q.params["batch_size"]) == (1, 1, 1)
    ]
    if single:
        one = max(single, key=lambda r: (float(r.metrics[s.throughput]), -r.number))
        out.append(
            f"the best single-stream batch-1 trial{budget}, {one.label()}, serves {served(one)}: the pick "
            f"serves {float(m[s.throughput]) / float(one.metrics[s.throughput]):.2f}x as many."
        )
    over = [q for q in s.points if s.budget_ms is not None and q.p95_ms > s.budget_ms]
    if over:
        out.append(f"{len(over)} of {len(s.points)} trials measured under load broke the p95 budget.")
    return out


def _placements_at_equal_accuracy(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    by = group_by(rows, lambda r: r.params["placement"])
    if len(by) < 2:
        return []
    tol = max(1.0 / info.validation_images if info.validation_images else 0.0, 0.005)
    level = min(max(r.accuracy for r in g) for g in by.values()) - tol  # the accuracy every placement reaches
    best = sorted((_fastest(r for r in g if r.accuracy >= level) for g in by.values()), key=lambda r: r.ms)
    out = []
    winner = best[0]
    for other in best[1:]:
        a, b = winner.params["placement"], other.params["placement"]
        figures = (
            f"fastest trials at >= {level:.1%}: #{winner.number} {winner.ms:.3f} ms/sample at "
            f"{winner.accuracy:.1%} vs #{other.number} {other.ms:.3f} ms/sample at {other.accuracy:.1%}"
        )
        if _faster(winner, other):
            out.append(f"{a} beat {b} by {_x(winner, other)} at the accuracy both reach ({figures}).")
        else:
            out.append(f"{a} and {b} were level at the accuracy both reach ({figures}, CIs overlap).")
    return out


def _precision_rule(rows: list[TrialRow]) -> list[str]:
    out = []
    groups = group_by(rows, lambda r: (r.params["placement"], r.params["batch_size"], r.params["prune_ratio"]))
    for (placement, bs, ratio), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        by = group_by(g, lambda r: r.params["precision"])
        if "fp32" not in by or len(by) < 2:
            continue
        ref = _fastest(by["fp32"])
        where = f"at batch {bs}" + (f", prune {ratio:.2f}" if ratio else "")
        for precision in sorted(set(by) - {"fp32"}):
            r = _fastest(by[precision])
            figures = f"#{r.number} {r.ms:.3f} vs #{ref.number} {ref.ms:.3f} ms/sample"
            drop = ref.accuracy - r.accuracy
            if _faster(ref, r):
                out.append(f"{precision} on {placement} was slower than fp32 {where} ({_x(r, ref)}: {figures}).")
            elif _faster(r, ref):
                out.append(
                    f"{precision} on {placement} was {_x(r, ref)} faster than fp32 {where} ({figures}), "
                    + (f"for {_pts(drop)} of accuracy." if drop > 1e-9 else "at no accuracy cost.")
                )
            else:
                out.append(f"{precision} on {placement} bought no latency over fp32 {where} ({figures}, CIs overlap).")
    return out


def _pruning_rule(rows: list[TrialRow]) -> list[str]:
    """Per prune ratio: the latency and accuracy it changed against unpruned, in matched groups."""
    rows = [r for r in rows if not r.params.get("drop_blocks") and not r.params.get("sparsity")]  # channels alone
    groups = group_by(rows, lambda r: (r.params["placement"], r.params["precision"], r.params["batch_size"]))
    effect: dict[float, list[tuple[float, float, bool]]] = defaultdict(list)  # ratio -> (speedup, drop, measurable)
    for g in groups.values():
        by = group_by(g, lambda r: r.params["prune_ratio"])
        if 0.0 not in by:
            continue
        ref = _fastest(by[0.0])
        for ratio, pruned in by.items():
            if ratio > 0:
                r = _fastest(pruned)
                effect[ratio].append(
                    (ref.ms / r.ms, max(x.accuracy for x in by[0.0]) - max(x.accuracy for x in pruned), _faster(r, ref))
                )
    if not effect:
        return []
    ratios = sorted(effect)
    useless = [q for q in ratios if not any(m for _, _, m in effect[q])]
    out = []
    if useless and useless == ratios[: len(useless)] and len(useless) < len(ratios):
        out.append(
            f"pruning below {ratios[len(useless)]:.2f} bought no latency (ratios "
            f"{', '.join(f'{q:.2f}' for q in useless)} measured against unpruned in the same placement, "
            "precision and batch)."
        )
        ratios = ratios[len(useless) :]
    for q in ratios:
        speed = statistics.median(s for s, _, _ in effect[q])
        drop = statistics.median(d for _, d, _ in effect[q])
        n = len(effect[q])
        cost = f"cost {_pts(drop)} of accuracy" if drop > 1e-9 else "cost no accuracy"
        matched = f"median of {n} matched placement/precision/batch group{'s' if n > 1 else ''}"
        if any(m for _, _, m in effect[q]):
            out.append(f"pruning {q:.2f} cut per-sample latency {speed:.1f}x and {cost} ({matched}).")
        else:
            out.append(f"pruning {q:.2f} bought no latency ({speed:.2f}x, CIs overlap; {matched}) and {cost}.")
    return out


def _batch_rule(rows: list[TrialRow]) -> list[str]:
    out = []
    groups = group_by(rows, lambda r: (r.params["placement"], r.params["precision"], r.params["prune_ratio"]))
    for (placement, precision, ratio), g in sorted(groups.items()):
        by = group_by(g, lambda r: r.params["batch_size"])
        where = f"{placement} {precision}" + (f", prune {ratio:.2f}" if ratio else "")
        if len(by) < 2:
            continue
        small = min(by)
        ref = _fastest(by[small])
        for bs in sorted(by)[1:]:
            r = _fastest(by[bs])
            figures = f"#{r.number} {r.ms:.3f} vs #{ref.number} {ref.ms:.3f} ms/sample"
            if _faster(r, ref):
                out.append(f"batch {bs} cut per-sample latency {_x(r, ref)} vs batch {small} on {where} ({figures}).")
            elif _faster(ref, r):
                out.append(f"batch {bs} was {_x(r, ref)} slower per sample than batch {small} on {where} ({figures}).")
            else:
                out.append(
                    f"batch {bs} bought no per-sample latency over batch {small} on {where} ({figures}, CIs overlap)."
                )
    return out


def _executed_precision_rule(rows: list[TrialRow]) -> list[str]:
    odd = group_by(
        [r for r in rows if r.metrics.get("executed_precision") not in (None, r.params.get("precision"))],
        lambda r: (r.params["placement"], r.params["precision"], r.metrics["executed_precision"]),
    )
    return [
        f"{p} on {pl} executed as {ex} in {len(g)} trial{'s' if len(g) > 1 else ''} "
        f"({', '.join(f'#{r.number}' for r in g)}): the runtime did not run the requested precision."
        for (pl, p, ex), g in sorted(odd.items())
    ]


def _mixed_precision_rule(rows: list[TrialRow]) -> list[str]:
    """What each fallback to float (the k most int8-sensitive layers; the ops between the compute layers, int8_ops
    compute) bought in accuracy and cost in latency, against uniform int8 of the same build (placement, prune
    ratio, batch, calibration method and images)."""
    int8 = [r for r in rows if r.params.get("precision") == "int8"]
    groups = group_by(
        int8,
        lambda r: (
            r.params["placement"],
            r.params["prune_ratio"],
            r.params["batch_size"],
            r.params.get("calibration", "minmax"),
            r.params.get("calibration_images", 0),
        ),
    )
    out = []
    for (placement, ratio, bs, *_), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        by = group_by(g, lambda r: (r.params.get("int8_ops", "all"), r.params.get("float_layers", 0)))
        if ("all", 0) not in by or len(by) < 2:
            continue
        ref = _fastest(by["all", 0])
        where = f"{placement}, batch {bs}" + (f", prune {ratio:.2f}" if ratio else "")
        for ops, k in sorted(set(by) - {("all", 0)}):
            r = _fastest(by[ops, k])
            gain = r.accuracy - ref.accuracy
            layers = ", ".join(r.metrics.get("float_layers") or []) or "none"
            what = " and ".join(
                (["quantizing only the Conv / Gemm / MatMul inputs"] if ops == "compute" else [])
                + ([f"keeping {k} layer{'s' if k > 1 else ''} in float ({layers})"] if k else [])
            )
            cost = (
                f"{_x(r, ref)} slower"
                if _faster(ref, r)
                else f"{_x(r, ref)} faster"
                if _faster(r, ref)
                else "no measurable latency"
            )
            out.append(
                f"{what} on {where} "
                + (
                    f"recovered {_pts(gain)}"
                    if gain > 1e-9
                    else f"lost {_pts(-gain)}"
                    if gain < -1e-9
                    else "changed no accuracy"
                )
                + f" over uniform int8, at {cost} (#{r.number} {r.ms:.3f} vs #{ref.number} {ref.ms:.3f} "
                f"ms/sample; ran {r.metrics.get('layer_precisions') or r.metrics.get('executed_precision')})."
            )
    return out


def _remeasure_rule(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    """How the Pareto points' figures held up when timed again in fresh processes (tuner.remeasure)."""
    points = [r for r in rows if r.pareto and r.remeasured_ms is not None]
    if not points:
        return []
    entries = [r.remeasure or {} for r in points]
    rounds = max(int(e.get("rounds") or 0) for e in entries)
    agree = sum(bool(e.get("within_5pct")) for e in entries)
    outside = sum(bool(e.get("outside_ci")) for e in entries)
    diffs = ", ".join(f"#{r.number} {100 * r.remeasured_diff:+.1f}%" for r in points)
    out = [
        (
            f"re-timed in fresh processes ({rounds} interleaved rounds): {agree} of {len(points)} Pareto "
            f"points within 5% of the study's figure ({diffs}); {outside} outside the study's within-process 95% CI, "
            "which covers one process's timing, not the spread between processes."
        )
    ]
    pick = results.fastest_feasible(r.point for r in rows)
    if pick is not None and pick.reordered:
        by_study, by_again = info.row(pick.study_point.number), info.row(pick.point.number)
        out.append(
            f"by the re-measured figures the fastest feasible point is #{by_again.number} "
            f"({by_again.remeasured_ms:.4f} ms/sample), not #{by_study.number} ({by_study.remeasured_ms:.4f} "
            f"re-measured, {by_study.ms:.4f} in the study); `export --max-drop` goes by the re-measured figures."
        )
    return out


def _bookkeeping(info: ReportInfo) -> list[str]:
    out = []
    done = info.completed
    infeasible = [r for r in done if not r.feasible]
    if infeasible:
        out.append(
            f"{len(infeasible)} of {len(done)} completed trials broke a constraint "
            f"({', '.join(f'#{r.number}' for r in infeasible)})."
        )
    dup = [r for r in info.trials if r.duplicate_of is not None]
    if dup:
        out.append(
            f"{len(dup)} trial{'s' if len(dup) > 1 else ''} repeated an earlier configuration and reused its "
            "outcome (not counted in --n-trials; a random proposal followed each): the sampler is running "
            "out of new points in this space."
        )
    reasons = Counter(r.note for r in info.trials if r.state in ("pruned", "fail"))
    for note, n in reasons.most_common(3):
        out.append(f"{n} trial{'s were' if n > 1 else ' was'} refused or failed: {note or 'no reason recorded'}")
    return out
