"""The trial table: one flat record per trial, the same columns for the report's CSV and
``TuneResult.to_dataframe()``, built from the report's rows (``tuner.report.data.trial_rows``), so that both
show one rule's figures (the front, feasibility, the speedup by the study's speed figure)."""

from __future__ import annotations

from typing import Any

from tuner.report.data import TrialRow


def trial_table(rows: list[TrialRow]) -> list[dict[str, Any]]:
    """Per trial: trial, state, baseline, pareto, feasible, duplicate_of, every candidate field, every metric (a
    figure measured in the run overrides the candidate's request of the same name: ``threads`` as it ran; the
    latency CI as two columns, a record such as ``recovery`` as ``recovery.steps``), the re-measured per-sample
    latency and its relative difference, the speedup, and the note (why it failed or was refused)."""
    out = []
    for r in rows:
        metrics = dict(r.metrics)
        lo, hi = metrics.pop("latency_ci_ms", None) or (None, None)
        again = r.remeasure or {}
        out.append(
            {
                "trial": r.number,
                "state": r.state,
                "baseline": r.baseline,
                "pareto": r.pareto,
                "feasible": r.feasible,
                "duplicate_of": r.duplicate_of,
                **r.params,
                **_flat(metrics),
                "latency_ci_low_ms": lo,
                "latency_ci_high_ms": hi,
                "remeasured_per_sample_ms": r.remeasured_ms,
                "remeasure_diff": again.get("rel_diff"),
                "speedup": r.speedup,
                "note": r.note,
            }
        )
    return out


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested records as dotted columns (``recovery.steps``), lists as one comma-separated cell."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out
