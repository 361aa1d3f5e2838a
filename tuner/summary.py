"""What a study found, as data (``summarize``) and as text (the Pareto table, the progress bar)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from tuner import results
from tuner.study.counts import count_trials
from tuner.table import aligned

if TYPE_CHECKING:
    from tuner.objectives import Objectives
    from tuner.study.loop import Progress


def _trial_entry(t: optuna.trial.FrozenTrial, baseline_ms: float | None) -> dict[str, Any]:
    metrics = t.user_attrs.get("metrics", {})
    return {"number": t.number, "params": t.user_attrs.get("candidate", {}), "metrics": metrics,
            "feasible": results.is_feasible(t), "speedup": results.speedup(baseline_ms, metrics.get("per_sample_ms")),
            "baseline": bool(t.user_attrs.get("baseline"))}


def summarize(study: optuna.Study, objectives: Objectives) -> dict[str, Any]:
    base = results.baseline_trial(study)
    base_ms = base.user_attrs["metrics"]["per_sample_ms"] if base is not None else None
    pick = results.fastest_feasible(results.points(study))
    states = [t.state for t in study.get_trials(deepcopy=False)]
    best = next((t for t in results.completed(study) if t.number == pick.point.number), None) if pick else None
    return {
        "objectives": dict(zip(objectives.names, objectives.directions)),
        "constraints": [str(c) for c in objectives.constraints],
        "reference_accuracy": (study.user_attrs.get("reference") or {}).get("accuracy"),
        "baseline": base.user_attrs["metrics"] if base else None,
        "trials": {s.name.lower(): states.count(s) for s in TrialState if states.count(s)},
        "repeats": count_trials(study).repeats,  # finished trials that reused an earlier trial's outcome
        "pareto": sorted((_trial_entry(t, base_ms) for t in results.front(study)), key=lambda e: e["number"]),
        "best_feasible": {**_trial_entry(best, base_ms), "by_remeasure": pick.by_remeasure}  # type: ignore[union-attr]
        if best is not None else None,
    }


def pareto_table(summary: dict[str, Any]) -> str:
    rows = [("trial", "placement", "precision", "prune", "bs", "fold", "graph", "thr", "accuracy", "drop",
             "ms/sample (95% CI)", "speedup")]
    ref = summary["reference_accuracy"] or 0.0
    for e in summary["pareto"]:
        c, m = e["params"], e["metrics"]
        lo, hi = results.per_sample_ci(m)
        rows.append((f"#{e['number']}", c["placement"], c["precision"] + ("" if m["executed_precision"] == c["precision"]
                                                                           else f" (ran {m['executed_precision']})"),
                     f"{c['prune_ratio']:.2f}", str(c["batch_size"]), "y" if c["fold_bn"] else "n",
                     c["graph_opt"] if c["placement"].startswith("ort") else "-", str(m["threads"]),
                     f"{m['accuracy']:.2%}", f"{100 * (ref - m['accuracy']):+.2f}",
                     f"{m['per_sample_ms']:.3f} ({lo:.3f}-{hi:.3f})",
                     f"{e['speedup']:.1f}x" if e["speedup"] else "-"))
    head = f"Pareto front ({len(summary['pareto'])} trials; drop in points vs {ref:.2%}):"
    best = summary["best_feasible"]
    tail = (f"fastest feasible: trial #{best['number']}, {best['metrics']['per_sample_ms']:.3f} ms/sample, "
            f"{best['speedup']:.1f}x the baseline" + (" (chosen by the re-measured figures)" if best["by_remeasure"]
                                                       else "")
            if best and best["speedup"] else "no feasible trial yet")
    return "\n".join([head, *aligned(rows), tail])


class ProgressBar:
    """A tqdm bar on stderr: trials done, Pareto size, best feasible speedup, the last trial."""

    def __init__(self, total: int):
        self.total = total
        self.bar: Any = None  # drawn at the first finished trial, so setup errors stay one line

    def update(self, p: Progress) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="trial", file=sys.stderr, dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} trials [{elapsed}{postfix}]")
        self.bar.n = min(p.done, self.bar.total)
        self.bar.set_postfix_str(f"pareto {p.pareto}" + (f", best {p.best_speedup:.1f}x" if p.best_speedup else "")
                                 + (f", {p.repeats} repeats not counted" if p.repeats else ""))
        self.bar.write(p.last, file=sys.stderr)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
