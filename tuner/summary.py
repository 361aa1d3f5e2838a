"""What a study found, as data (``summarize``) and as text (the Pareto table, the progress bar)."""

from __future__ import annotations

import sys
from typing import Any

import optuna
from optuna.trial import TrialState

from tuner.objectives import Objectives
from tuner.study import (Progress, baseline_trial, best_feasible, count_trials, is_feasible, pareto_trials,
                         speedup)


def _trial_entry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "params": t.user_attrs.get("candidate", {}), "metrics": t.user_attrs.get("metrics", {}),
            "feasible": is_feasible(t), "speedup": speedup(study, t), "baseline": bool(t.user_attrs.get("baseline"))}


def summarize(study: optuna.Study, objectives: Objectives) -> dict[str, Any]:
    base = baseline_trial(study)
    best = best_feasible(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return {
        "objectives": dict(zip(objectives.names, objectives.directions)),
        "constraints": [str(c) for c in objectives.constraints],
        "reference_accuracy": (study.user_attrs.get("reference") or {}).get("accuracy"),
        "baseline": _trial_entry(study, base)["metrics"] if base else None,
        "trials": {s.name.lower(): states.count(s) for s in TrialState if states.count(s)},
        "repeats": count_trials(study).repeats,  # finished trials that reused an earlier trial's outcome
        "pareto": sorted((_trial_entry(study, t) for t in pareto_trials(study)), key=lambda e: e["number"]),
        "best_feasible": _trial_entry(study, best) if best else None,
    }


def pareto_table(summary: dict[str, Any]) -> str:
    rows = [("trial", "placement", "precision", "prune", "bs", "fold", "graph", "thr", "accuracy", "drop",
             "ms/sample (95% CI)", "speedup")]
    ref = summary["reference_accuracy"] or 0.0
    for e in summary["pareto"]:
        c, m = e["params"], e["metrics"]
        lo, hi = (x / c["batch_size"] for x in m["latency_ci_ms"])
        rows.append((f"#{e['number']}", c["placement"], c["precision"] + ("" if m["executed_precision"] == c["precision"]
                                                                           else f" (ran {m['executed_precision']})"),
                     f"{c['prune_ratio']:.2f}", str(c["batch_size"]), "y" if c["fold_bn"] else "n",
                     c["graph_opt"] if c["placement"].startswith("ort") else "-", str(m["threads"]),
                     f"{m['accuracy']:.2%}", f"{100 * (ref - m['accuracy']):+.2f}",
                     f"{m['per_sample_ms']:.3f} ({lo:.3f}-{hi:.3f})",
                     f"{e['speedup']:.1f}x" if e["speedup"] else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    head = f"Pareto front ({len(summary['pareto'])} feasible trials; drop in points vs {ref:.2%}):"
    best = summary["best_feasible"]
    tail = (f"fastest feasible: trial #{best['number']}, {best['metrics']['per_sample_ms']:.3f} ms/sample, "
            f"{best['speedup']:.1f}x the baseline" if best and best["speedup"] else "no feasible trial yet")
    return "\n".join([head, *lines, tail])


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
