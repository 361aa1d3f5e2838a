"""How the findings compare two trials: a difference is real only when the 95% CIs of the two per-sample
medians do not overlap and it is at least MIN_EFFECT; a group is represented by its fastest trial."""

from __future__ import annotations

from collections.abc import Iterable

from tuner import results
from tuner.report.data import TrialRow

# Two medians count as different only when their 95% CIs do not overlap AND they differ by this much.
MIN_EFFECT = 0.05


def faster(a: TrialRow, b: TrialRow) -> bool:
    """a is measurably faster per sample than b: CIs apart and at least MIN_EFFECT."""
    return a.ms_ci[1] < b.ms_ci[0] and a.ms < b.ms * (1 - MIN_EFFECT)


def times(a: TrialRow, b: TrialRow) -> str:
    return f"{max(a.ms, b.ms) / min(a.ms, b.ms):.1f}x"


def fastest(rows: Iterable[TrialRow]) -> TrialRow:
    """The fastest of a matched group, by the tie-break of every "fastest" (results.speed_order)."""
    return min(rows, key=lambda r: results.speed_order(r.ms, r.accuracy, r.number))


def pts(delta: float) -> str:
    return f"{100 * delta:.1f} points"
