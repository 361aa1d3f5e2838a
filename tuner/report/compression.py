"""The findings about compression: what the ratio profile, dropped blocks (students) and weight sparsity each
changed against their absence in otherwise matched trials, and whether the recovery budget was enough (which
candidates the study recovered longer, and which recoveries were still improving when they stopped)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from tuner.report.compare import faster, fastest, pts, times
from tuner.report.data import TrialRow, group_by

_SETTINGS = ("placement", "precision", "batch_size", "prune_ratio", "prune_profile", "drop_blocks", "sparsity")


def compression_findings(rows: list[TrialRow]) -> list[str]:
    return [
        *_against(rows, "prune_profile", "uniform", _profile_text),
        *_against(rows, "drop_blocks", 0, _drop_text),
        *_against(rows, "sparsity", 0.0, _sparsity_text),
        *_recovery(rows),
    ]


def _against(
    rows: list[TrialRow], field: str, absent: Any, text: Callable[[Any, list[tuple[TrialRow, TrialRow]]], str]
) -> list[str]:
    """For each value of ``field``: pairs (fastest with it, fastest without it) among trials matched on every
    other compression and placement setting."""
    others = [k for k in _SETTINGS if k != field]
    pairs: dict[Any, list[tuple[TrialRow, TrialRow]]] = {}
    for group in group_by(rows, lambda r: tuple(r.params.get(k) for k in others)).values():
        by = group_by(group, lambda r: r.params.get(field, absent))
        if absent not in by:
            continue
        for value, with_it in by.items():
            if value != absent and not (field == "prune_profile" and not with_it[0].params.get("prune_ratio")):
                pairs.setdefault(value, []).append((fastest(with_it), fastest(by[absent])))
    return [text(value, pairs[value]) for value in sorted(pairs)]


def _effect(pairs: list[tuple[TrialRow, TrialRow]]) -> tuple[float, float, bool, str]:
    """(median speedup, median accuracy cost, measurable in any pair, how many matched groups)."""
    speed = statistics.median(ref.ms / r.ms for r, ref in pairs)
    cost = statistics.median(ref.accuracy - r.accuracy for r, ref in pairs)
    n = len(pairs)
    return speed, cost, any(faster(r, ref) for r, ref in pairs), f"{n} matched group{'s' if n > 1 else ''}"


def _cost(cost: float) -> str:
    return f"cost {pts(cost)} of accuracy" if cost > 1e-9 else "cost no accuracy"


def _profile_text(profile: Any, pairs: list[tuple[TrialRow, TrialRow]]) -> str:
    speed, cost, real, n = _effect(pairs)
    macs = statistics.median(r.metrics["macs"] / max(1, ref.metrics["macs"]) for r, ref in pairs)
    verdict = f"{speed:.2f}x the speed of uniform" + ("" if real else " (CIs overlap)")
    lost = f"lost {pts(cost)} of accuracy against it" if cost > 1e-9 else f"kept {pts(-cost)} more accuracy"
    return (
        f"the {profile} ratio profile ran at {verdict} at the same ratio, with {macs:.2f}x its MACs, and {lost} ({n})."
    )


def _drop_text(k: Any, pairs: list[tuple[TrialRow, TrialRow]]) -> str:
    speed, cost, real, n = _effect(pairs)
    names = ", ".join(pairs[0][0].metrics.get("dropped_blocks") or []) or "-"
    gain = f"cut per-sample latency {speed:.1f}x" if real else f"bought no latency ({speed:.2f}x, CIs overlap)"
    return f"dropping {k} block{'s' if k > 1 else ''} ({names}) {gain} and {_cost(cost)} ({n})."


def _sparsity_text(s: Any, pairs: list[tuple[TrialRow, TrialRow]]) -> str:
    speed, cost, real, n = _effect(pairs)
    zipped = statistics.median(
        ref.metrics.get("compressed_mb", 0.0) / max(1e-9, r.metrics.get("compressed_mb", 0.0)) for r, ref in pairs
    )
    r, ref = pairs[0]
    if real and speed > 1:
        speed_text = f"ran {times(r, ref)} faster than dense"
    else:
        why = "measurably slower" if real else "CIs overlap"
        speed_text = f"ran at {speed:.2f}x the dense speed ({why}: no runtime here turned the zeros into speed)"
    return (
        f"sparsity {s:.2f} {speed_text}; its zipped artifact is {zipped:.1f}x smaller "
        f"({r.metrics.get('compressed_mb', 0.0):.2f} vs {ref.metrics.get('compressed_mb', 0.0):.2f} MB); "
        f"{_cost(cost)} ({n})."
    )


def _recovery(rows: list[TrialRow]) -> list[str]:
    out = []
    promoted = [r for r in rows if r.short_recovery]
    if promoted:
        gains = ", ".join(f"#{r.number} {r.short_recovery['accuracy']:.2%} -> {r.accuracy:.2%}" for r in promoted[:4])
        out.append(
            f"{len(promoted)} candidate{'s' if len(promoted) > 1 else ''} missed the accuracy floor after the "
            f"short recovery by little while faster than every feasible point, and got the long one "
            f"({gains}{', ...' if len(promoted) > 4 else ''})."
        )
    short = {}
    for r in rows:
        rec = r.metrics.get("recovery") or {}
        # out of steps with its best proxy at the very end: more steps could still buy accuracy
        if rec.get("stopped") == "budget" and rec.get("kept") == rec.get("before", 0) + rec.get("steps", 0):
            short.setdefault(
                (
                    r.params.get("prune_ratio"),
                    r.params.get("prune_profile"),
                    r.params.get("drop_blocks"),
                    r.params.get("sparsity"),
                    rec.get("fidelity"),
                ),
                rec,
            )
    if short:
        what = "; ".join(
            f"prune {k[0]:.2f} {k[1]}, -{k[2]} blocks, sparsity {k[3]:g}, {k[4]} ({rec['steps']} steps)"
            for k, rec in list(short.items())[:3]
        )
        out.append(
            f"the proxy (train images kept out of the recovery) was still improving when {len(short)} "
            f"recover{'ies' if len(short) > 1 else 'y'} ran out of steps ({what}): a larger --recover-steps "
            "may buy accuracy (benchmarks/HISTORY.md, recovery in steps)."
        )
    return out
