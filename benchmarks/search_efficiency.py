"""Search efficiency: hypervolume after 10 / 20 / 40 trials for the tpe, nsga2 and random samplers (3 seeds
each), as a percentage of the best known front, which a 300-trial random search provides.

Full figures (the tests' tiny CNN on digits at 16 px, the default space and objectives; about 15 minutes
on 2 cores, nearly all of it measuring the ~300 distinct candidates once, ~2 s each):

    python benchmarks/search_efficiency.py

Quick check:

    python benchmarks/search_efficiency.py --budgets 5 10 --n-seeds 2 --reference-trials 30

Cheap and honest: every distinct candidate is REALLY built and measured, once, in this process
(tuner.workload.load_workload + tuner.pipeline.evaluate, as a study's worker does), and its metrics are
memoized by candidate, so all runs and the reference replay the same real measurements: the samplers
differ only in which candidates they propose. Each run is an in-memory Optuna study driven by ask/tell
with tuner.study.loop.make_sampler(name, seed, max budget) (the sampler a study of that many trials gets),
the baseline enqueued as trial 0 as `tuner run` does, candidates from tuner.space.load_space(--space),
objectives and the accuracy-drop constraint from --objectives (set on each trial as the study does).
"After N trials" counts the baseline and leaves out repeats, as --n-trials does.

The baseline is enqueued with its params in the space's names, as `tuner run` does, so samplers learn
from it (NSGA-II's relative search space is the unconditional params: placement, prune_ratio, fold_bn,
batch_size, threads). --no-baseline leaves it out.

Hypervolume counts feasible points only (the constraint met), against a fixed reference point, after
normalization over every point measured in this run of the script (so all runs share one scale):
  hv_linear  accuracy from 0 to 1, per-sample latency from 0 to 1.1 x the slowest latency measured; the
             reference point is (accuracy 0, 1.1 x slowest). Simple, but coarse: with accuracies all
             near the top and latencies spanning orders of magnitude, most candidates score > 90%.
  hv_log     accuracy from the constraint's floor (baseline accuracy - max drop; the reference point) to
             the best feasible accuracy, log latency from the fastest to 1.1 x the slowest measured. This
             rewards finding both the fastest and the most accurate feasible points.
The reference front is every distinct point measured here (the 300-trial random search plus anything a
run found beyond it): its hypervolume is the best known, so a run scores <= 100%. The random search's own
share is printed too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    TINY,
    add_workload_args,
    describe_workload,
    machine_json,
    median,
    print_machine,
    workload_spec,
)

SAMPLERS = ("tpe", "nsga2", "random")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p, model=TINY, resolution=16, studies_dir="studies")
    p.add_argument("--space", default="default", help="search space name or YAML path (default: default)")
    p.add_argument(
        "--objectives",
        default="accuracy_latency",
        help="objectives name or YAML path: accuracy (maximize) and one minimized metric",
    )
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=("tpe", "nsga2", "gp", "random"))
    p.add_argument("--budgets", nargs="+", type=int, default=[10, 20, 40], help="trials (baseline included)")
    p.add_argument("--n-seeds", type=int, default=3, help="sampler seeds 0..N-1 per sampler (default 3)")
    p.add_argument("--reference-trials", type=int, default=300, help="trials of the random-search reference")
    p.add_argument("--reference-seed", type=int, default=1000, help="its sampler seed (apart from the runs')")
    p.add_argument("--target", type=float, default=98.0, help="the %% of the reference hypervolume to reach")
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="do not enqueue the baseline as trial 0 (see the note on NSGA-II in the docstring)",
    )
    args = p.parse_args(argv)
    if min(args.budgets) < 1 or args.n_seeds < 1 or args.reference_trials < 1:
        p.error("--budgets, --n-seeds and --reference-trials must be >= 1")
    args.budgets = sorted(set(args.budgets))
    return args


class Oracle:
    """Builds and measures each distinct candidate once; later asks replay the memoized figures."""

    def __init__(self, workload: Any, reference_accuracy: float):
        self.w = workload
        self.reference_accuracy = reference_accuracy
        self.memo: dict[Any, tuple[str, Any]] = {}  # Candidate -> ("ok", metrics) | ("fail"|"pruned", reason)
        self.seconds = 0.0

    def __call__(self, candidate: Any) -> tuple[str, Any]:
        if candidate not in self.memo:
            from tuner.errors import UnsupportedCombination
            from tuner.metric import drop_points
            from tuner.pipeline import evaluate

            start = time.perf_counter()
            try:
                metrics = dict(evaluate(self.w, candidate).metrics)
                metrics["accuracy_drop"] = drop_points(self.reference_accuracy, metrics["accuracy"])
                self.memo[candidate] = ("ok", metrics)
            except UnsupportedCombination as err:
                self.memo[candidate] = ("pruned", str(err))
            except Exception as err:  # noqa: BLE001 - a build or runtime failure fails that trial, as in a study
                self.memo[candidate] = ("fail", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}")
                print(f"    failed: {candidate}: {self.memo[candidate][1]}", flush=True)
            self.seconds += time.perf_counter() - start
        return self.memo[candidate]

    def points(self) -> list[dict]:
        return [m for status, m in self.memo.values() if status == "ok"]


def run_sampler(
    name: str,
    seed: int,
    n_trials: int,
    sampler_trials: int,
    space: Any,
    objectives: Any,
    oracle: Oracle,
    baseline: bool = True,
    log_every: int = 0,
) -> list[dict | None]:
    """One in-memory study by ask/tell; returns each counted trial's metrics (None when failed or pruned).

    Repeats are handled as `tuner run` does: a repeated candidate gets its earlier outcome, is not counted,
    and the next proposal is random (tuner.study.loop.next_sampler); a run of repeats ends the run
    (tuner.study.counts.space_exhausted)."""
    import optuna
    from optuna.trial import TrialState

    from tuner.study.counts import space_exhausted
    from tuner.study.objective import baseline_candidate
    from tuner.study.samplers import make_sampler, next_sampler

    sampler = make_sampler(name, seed, sampler_trials)
    study = optuna.create_study(directions=list(objectives.directions), sampler=sampler)
    if baseline:
        params = space.params_of(baseline_candidate())
        study.enqueue_trial(params or {}, user_attrs={"baseline": True, "fixed_point": params is None})
    history: list[dict | None] = []
    tried: set[Any] = set()
    repeat, repeats, streak = False, 0, 0
    while len(history) < n_trials and not space_exhausted(streak, n_trials):
        study.sampler = next_sampler(sampler, repeat, seed + len(history) + repeats)
        trial = study.ask()
        candidate = baseline_candidate() if trial.user_attrs.get("fixed_point") else space.sample(trial)
        status, result = oracle(candidate)
        repeat = candidate in tried
        if status != "fail":  # a study builds a failed candidate again
            tried.add(candidate)
        if status == "ok":
            for c in objectives.constraints:
                trial.set_constraint(c.metric, c.violation(result))
            study.tell(trial, objectives.values(result))
        else:
            study.tell(trial, state=TrialState.PRUNED if status == "pruned" else TrialState.FAIL)
        streak = streak + 1 if repeat else 0
        if repeat:
            repeats += 1
            continue
        history.append(result if status == "ok" else None)
        if log_every and len(history) % log_every == 0:
            print(
                f"    {len(history)}/{n_trials} trials, {len(oracle.memo)} distinct candidates measured "
                f"({oracle.seconds:.0f} s measuring)",
                flush=True,
            )
    return history


# ---------------------------------------------------------------- hypervolume


class Scale:
    """The fixed normalizations (see the docstring), set from every measured point."""

    def __init__(self, points: list[dict], accuracy: str, latency: str, floor: float, feasible: Any):
        lat = [p[latency] for p in points]
        self.accuracy, self.latency, self.floor, self.feasible = accuracy, latency, floor, feasible
        self.lat_ref = 1.1 * max(lat)
        self.lat_min = min(lat)
        good = [p[accuracy] for p in points if feasible(p)]
        self.acc_best = max(good) if good else 1.0

    def linear(self, p: dict) -> tuple[float, float]:
        return 1.0 - p[self.accuracy], p[self.latency] / self.lat_ref

    def log(self, p: dict) -> tuple[float, float]:
        span = self.acc_best - self.floor
        acc = (self.acc_best - p[self.accuracy]) / span if span > 0 else 0.0
        lat = math.log(p[self.latency] / self.lat_min) / math.log(self.lat_ref / self.lat_min)
        return acc, lat

    def hv(self, points: list[dict], kind: str) -> float:
        norm = self.linear if kind == "linear" else self.log
        from tuner.report.data import hypervolume

        return hypervolume([norm(p) for p in points if self.feasible(p)], (1.0, 1.0))


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from tuner import logs
    from tuner.objectives import load_objectives
    from tuner.space import load_space
    from tuner.train import torch_accuracy
    from tuner.workload import load_workload

    fp = print_machine()
    space, objectives = load_space(args.space), load_objectives(args.objectives)
    dirs = dict(zip(objectives.names, objectives.directions))
    others = [n for n in objectives.names if n != "accuracy"]
    if dirs.get("accuracy") != "maximize" or len(others) != 1 or dirs[others[0]] != "minimize":
        raise SystemExit(f"{objectives.source}: this benchmark needs accuracy (maximize) and one minimized metric")
    latency = others[0]
    print(f"workload: {describe_workload(args)}")
    print(
        f"space: {space.source} (placements {', '.join(space.placements)}); objectives: "
        f"{', '.join(f'{d} {n}' for n, d in dirs.items())}; constraints: "
        f"{', '.join(map(str, objectives.constraints)) or 'none'}"
    )
    print(
        f"runs: samplers {', '.join(args.samplers)} x seeds 0..{args.n_seeds - 1}, {max(args.budgets)} trials each "
        f"(hypervolume after {', '.join(map(str, args.budgets))}); reference: random search, "
        f"{args.reference_trials} trials, seed {args.reference_seed}; baseline enqueued as trial 0: "
        f"{'no' if args.no_baseline else 'yes'}",
        flush=True,
    )

    with logs.to(lambda m: print(f"  {m}", flush=True)):
        w = load_workload(workload_spec(args))
    reference_accuracy = torch_accuracy(w.reference_model(), w.data)
    floor = objectives.min_accuracy(reference_accuracy)
    print(
        f"baseline accuracy {reference_accuracy:.2%} on {len(w.data.val)} validation images"
        + (f"; feasible: accuracy >= {floor:.2%}" if floor is not None else ""),
        flush=True,
    )
    oracle = Oracle(w, reference_accuracy)
    start = time.perf_counter()

    print(f"reference: random search, {args.reference_trials} trials", flush=True)
    run_sampler(
        "random",
        args.reference_seed,
        args.reference_trials,
        args.reference_trials,
        space,
        objectives,
        oracle,
        not args.no_baseline,
        log_every=25,
    )
    reference_keys = set(oracle.memo)
    runs: dict[tuple[str, int], list[dict | None]] = {}
    for name in args.samplers:
        for seed in range(args.n_seeds):
            before = len(oracle.memo)
            runs[(name, seed)] = run_sampler(
                name, seed, max(args.budgets), max(args.budgets), space, objectives, oracle, not args.no_baseline
            )
            print(
                f"  {name:<6} seed {seed}: {max(args.budgets)} trials, {len(oracle.memo) - before} candidates new "
                f"to the memo ({len(oracle.memo)} distinct measured, {oracle.seconds:.0f} s measuring)",
                flush=True,
            )

    points = oracle.points()
    feasible = objectives.feasible
    scale = Scale(
        points,
        "accuracy",
        latency,
        floor if floor is not None else min(p["accuracy"] for p in points if feasible(p)),
        feasible,
    )
    best = {kind: scale.hv(points, kind) for kind in ("linear", "log")}
    ref_points = [m for k, (status, m) in oracle.memo.items() if k in reference_keys and status == "ok"]
    reference_share = {kind: 100 * scale.hv(ref_points, kind) / best[kind] if best[kind] else None for kind in best}
    fastest = min((p for p in points if feasible(p)), key=lambda p: p[latency], default=None)

    def pct(history: list[dict | None], n: int, kind: str) -> float | None:
        done = [m for m in history[:n] if m is not None]
        return 100 * scale.hv(done, kind) / best[kind] if best[kind] else None

    table: dict[str, dict[str, Any]] = {}
    for name in args.samplers:
        for n in args.budgets:
            entry: dict[str, Any] = {}
            for kind in ("linear", "log"):
                per_seed = [pct(runs[(name, s)], n, kind) for s in range(args.n_seeds)]
                entry[f"hv_{kind}_pct"] = median(per_seed)
                entry[f"hv_{kind}_pct_seeds"] = per_seed
            entry["fastest_feasible_ms"] = median(
                [
                    min((m[latency] for m in runs[(name, s)][:n] if m is not None and feasible(m)), default=None)
                    for s in range(args.n_seeds)
                ]
            )
            table.setdefault(name, {})[str(n)] = entry

    print()
    print(
        f"{len(oracle.memo)} distinct candidates measured ({len(points)} ok, "
        f"{sum(feasible(p) for p in points)} feasible) in {oracle.seconds:.0f} s; "
        f"total {time.perf_counter() - start:.0f} s"
    )
    if fastest is not None:
        print(
            f"best known front: fastest feasible {fastest[latency]:.4f} {latency} "
            f"(accuracy {fastest['accuracy']:.2%}); the {args.reference_trials}-trial random search alone reaches "
            f"{reference_share['linear']:.1f}% (linear) / {reference_share['log']:.1f}% (log) of its hypervolume"
        )
    header = (
        f"{'sampler':<8} {'trials':>6}  {'hv_linear % (median; seeds)':<34} {'hv_log % (median; seeds)':<34} "
        f"{'fastest feasible ' + latency:>24}"
    )
    print(header)
    print("-" * len(header))
    for name in args.samplers:
        for n in args.budgets:
            e = table[name][str(n)]
            cells = []
            for kind in ("linear", "log"):
                seeds = "/".join("-" if v is None else f"{v:.1f}" for v in e[f"hv_{kind}_pct_seeds"])
                cells.append(
                    f"{'-' if e[f'hv_{kind}_pct'] is None else format(e[f'hv_{kind}_pct'], '.1f'):>5} ({seeds})"
                )
            ms = e["fastest_feasible_ms"]
            print(f"{name:<8} {n:>6}  {cells[0]:<34} {cells[1]:<34} {'-' if ms is None else format(ms, '.4f'):>24}")
    print("(% of the best known front's hypervolume; median over seeds, then each seed)")

    top = str(max(args.budgets))
    verdict: dict[str, Any] = {}
    for kind in ("linear", "log"):
        rand = table.get("random", {}).get(top, {}).get(f"hv_{kind}_pct")
        for name in ("tpe", "nsga2"):
            if name not in table:
                continue
            v = table[name][top][f"hv_{kind}_pct"]
            reaches = v is not None and v >= args.target
            beats = v is not None and rand is not None and v > rand
            verdict[f"{name}_{kind}"] = {"pct": v, "reaches_target": reaches, "beats_random": beats}
            print(
                f"{kind:<6}: {name} at {top} trials: {'-' if v is None else f'{v:.1f}%'} in the median seed -> "
                f"{'reaches' if reaches else 'does NOT reach'} {args.target:g}% of the reference, "
                f"{'beats' if beats else 'does NOT beat'} random ({'-' if rand is None else f'{rand:.1f}%'})"
            )
    for kind in ("linear", "log"):
        met = [
            n
            for n in ("tpe", "nsga2")
            if verdict.get(f"{n}_{kind}", {}).get("reaches_target") and verdict[f"{n}_{kind}"]["beats_random"]
        ]
        verdict[f"met_{kind}"] = bool(met)
        print(
            f"{kind:<6}: tpe or nsga2 at {top} trials reaches {args.target:g}% and beats random: "
            f"{'yes (' + ', '.join(met) + ')' if met else 'no'}"
        )
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "search_efficiency",
                "baseline_trial": not args.no_baseline,
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "weights": args.weights,
                "train_steps": args.train_steps,
                "recover_steps": args.recover_steps,
                "seed": args.seed,
                "space": space.source,
                "objectives": objectives.source,
                "reference_accuracy": reference_accuracy,
                "budgets": args.budgets,
                "n_seeds": args.n_seeds,
                "reference_trials": args.reference_trials,
                "reference_seed": args.reference_seed,
                "distinct_measured": len(oracle.memo),
                "feasible_measured": sum(feasible(p) for p in points),
                "measure_seconds": oracle.seconds,
                "best_hv": best,
                "reference_run_pct": reference_share,
                "fastest_feasible": {"accuracy": fastest["accuracy"], latency: fastest[latency]} if fastest else None,
                "results": table,
                "target_pct": args.target,
                "verdict": verdict,
            }
        )
    )


if __name__ == "__main__":
    main()
