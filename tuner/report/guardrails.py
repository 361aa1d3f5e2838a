"""What the pick forgot, where a user decides (issue 30): its guardrail figures against the reference in words, a
finding when top-1 holds but a guardrail does not, the fastest point that held top-1 and broke one, and the pick's
most-hurt classes as a table. A study that bounds no guardrail is read against ``objectives/guarded.yaml``'s
bounds, named as such."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from tuner import results
from tuner.guardrails import GUARD_METRICS
from tuner.objectives import Constraint, load_objectives
from tuner.report.data import ReportInfo, TrialRow

# what top-1 hides, as bounds: the guardrails and, where the study measured it, the corruption set's drop
GUARDS = (*GUARD_METRICS, "corruption_drop")
YARDSTICK = "guarded"  # the shipped objectives file whose bounds read a study that set none of its own
MOST_HURT = 5  # classes in the pick's table


@dataclass(frozen=True)
class ClassRow:
    name: str
    reference: float  # share of the class's images the reference predicted right
    pick: float
    drop: float  # percentage points (tuner.names.DROP_UNIT)


def bounds(info: ReportInfo) -> tuple[tuple[Constraint, ...], float, str]:
    """(the guardrail bounds, the accuracy drop that counts as "top-1 holds", where they come from): the study's
    own where it set any, else objectives/guarded.yaml's."""
    own = tuple(Constraint.parse(c) for c in info.constraints)
    guards = tuple(c for c in own if c.metric in GUARDS and c.max is not None)
    if guards:
        drop = next((c.max for c in own if c.metric == "accuracy_drop" and c.max is not None), None)
        return guards, drop if drop is not None else 1.0, "the study's constraints"
    shipped = load_objectives(YARDSTICK)
    return (
        tuple(c for c in shipped.constraints if c.metric in GUARD_METRICS and c.max is not None),
        next(c.max for c in shipped.constraints if c.metric == "accuracy_drop" and c.max is not None),
        f"objectives/{YARDSTICK}.yaml's bounds",
    )


def broken(metrics: dict[str, Any], guards: tuple[Constraint, ...]) -> list[Constraint]:
    return [c for c in guards if c.metric in metrics and c.violation(metrics) > 0]


def _class_name(info: ReportInfo, index: int) -> str:
    names = info.reference_guardrails.get("classes") or []
    return str(names[index]) if 0 <= index < len(names) else f"class {index}"


def most_hurt(info: ReportInfo, row: TrialRow, n: int = MOST_HURT) -> list[ClassRow]:
    """The ``n`` classes whose share predicted right fell the most from the reference to ``row``, worst first."""
    ref, mine = info.reference_guardrails.get("class_accuracy") or [], row.metrics.get("class_accuracy") or []
    rows = [
        ClassRow(_class_name(info, i), a, b, 100.0 * (a - b))
        for i, (a, b) in enumerate(zip(ref, mine))
        if a is not None and b is not None
    ]
    return sorted(rows, key=lambda r: (-r.drop, r.name))[:n]


def _words(info: ReportInfo, m: dict[str, Any]) -> str:
    worst = int(m.get("worst_class", -1))
    return (
        f"its worst class, {_class_name(info, worst)}, lost {m['worst_class_drop']:.1f} points; "
        f"{m['flip_rate']:.1%} of the validation images are predicted otherwise than by the reference "
        f"({m['flip_rate_correct']:.1%} of those it had right); ECE {m['ece']:.3f} ({m['ece_increase']:+.3f})"
    )


def guardrail_findings(info: ReportInfo, rows: list[TrialRow]) -> list[str]:
    """The pick's guardrails in words; top-1 held but a guardrail did not (the pick, or a faster point)."""
    pick = results.fastest_feasible(r.point for r in rows)
    if pick is None or info.baseline is None:
        return []
    best = info.row(pick.point.number)
    if "flip_rate" not in best.metrics or best.number == info.baseline:
        return []
    guards, holds, source = bounds(info)
    held = "top-1" if info.metric == "top-1 accuracy" else info.metric  # a study of the user's metric never says top-1
    out = [
        f"what the fastest feasible trial, #{best.number}, forgot against the reference: {_words(info, best.metrics)}."
    ]
    over = broken(best.metrics, guards)
    if over:
        out.append(
            f"{held} holds ({best.metrics.get('accuracy_drop', 0.0):.2f} points) but a guardrail does not: "
            f"#{best.number} breaks {', '.join(str(c) for c in over)} ({source}); "
            f"--objectives {YARDSTICK} makes them constraints."
        )
    faster = [
        r
        for r in rows
        if "flip_rate" in r.metrics
        and r.number != best.number
        and r.metrics.get("accuracy_drop", 0.0) <= holds + results.EPS
        and broken(r.metrics, guards)
        and r.point.per_sample_ms < best.point.per_sample_ms
    ]
    if faster:
        f = min(faster, key=lambda r: results.speed_order(r.point.per_sample_ms, r.accuracy, r.number))
        out.append(
            f"the fastest trial that holds {held} within {holds:g} points but breaks a guardrail ("
            f"{', '.join(str(c) for c in broken(f.metrics, guards))}, {source}): {f.label()} at "
            f"{f.ms:.3f} ms/sample, {best.point.per_sample_ms / f.point.per_sample_ms:.1f}x the pick's "
            f"speed; {_words(info, f.metrics)}."
        )
    return out


def class_table_html(info: ReportInfo) -> str:
    """The pick's most-hurt classes against the reference, as an HTML table ("" where there is nothing to show)."""
    pick = results.fastest_feasible(r.point for r in info.completed)
    if pick is None or not info.reference_guardrails.get("class_accuracy"):
        return ""
    best = info.row(pick.point.number)
    hurt = most_hurt(info, best)
    if not hurt:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(r.name)}</td><td>{r.reference:.1%}</td><td>{r.pick:.1%}</td><td>{r.drop:+.1f}</td></tr>"
        for r in hurt
    )
    return (
        f'<h2>What the pick forgot</h2><p class="note">Trial #{best.number}, the fastest feasible, against the '
        "reference: the classes whose share predicted right fell the most (points).</p>"
        '<table class="classes"><thead><tr><th>class</th><th>reference</th>'
        f"<th>#{best.number}</th><th>drop</th></tr></thead><tbody>{body}</tbody></table>"
    )
