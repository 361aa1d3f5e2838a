"""What a default study costs: wall time, trials, and where a trial's time goes (prune, recovery, calibration,
export, measuring), the overhead beyond measuring, and the build cache's hit rate.

Full figures (the default study: resnet18 on digits at 32 px, 20 trials, TPE, from an empty cache):

    python benchmarks/study_cost.py

Quick check (the tests' tiny CNN at 16 px, 6 trials):

    python benchmarks/study_cost.py --model tests/tiny_models.py:conv_net --resolution 16 --n-trials 6

It runs `python -m tuner --json` in a subprocess, exactly as a user would, in a fresh --studies-dir (so the
baseline is trained and every build is made inside the measured wall time) unless --reuse is given (then
--studies-dir and its cache are used as they are: the warm-cache figures). The study's storage is a
temporary SQLite file (kept with --keep) that is read back afterwards: per trial, user_attrs["build_seconds"]
(prune / recover / fuse / convert / export / calibrate), user_attrs["metrics"]["measure_seconds"],
user_attrs["cache"] and datetime_start / datetime_complete. A trial whose candidate was measured before
reuses those figures (user_attrs["duplicate_of"]); such a repeat does not count towards --n-trials, and the
per-step split is over the trials that really built and measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    add_workload_args,
    describe_workload,
    fmt,
    machine_json,
    median,
    print_machine,
    run_tuner,
    workload_cli_args,
)

# What the report calls each step, and the build_seconds keys behind it (measure comes from the metrics).
STEPS = {
    "prune": ("prune",),
    "recovery": ("recover",),
    "fold/convert": ("fuse", "convert"),
    "export": ("export",),
    "calibration": ("calibrate",),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p, studies_dir=None)
    p.add_argument(
        "--n-trials", type=int, default=20, help="trials in the study, baseline included (default 20, as `tuner run`)"
    )
    p.add_argument("--sampler", default="tpe", help="tpe | nsga2 | gp | random (default tpe)")
    p.add_argument("--space", default="default", help="search space name or YAML path (default: default)")
    p.add_argument("--objectives", default="accuracy_latency", help="objectives name or YAML path")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="run in --studies-dir (default studies/) with its cache as it is, instead of a fresh one",
    )
    p.add_argument("--keep", action="store_true", help="keep the fresh studies dir and the study's SQLite file")
    args = p.parse_args(argv)
    if args.n_trials < 1:
        p.error("--n-trials must be >= 1")
    if not args.reuse and args.studies_dir:
        p.error("--studies-dir is only used with --reuse (without it the study runs in a fresh directory)")
    return args


def trial_figures(t) -> dict:
    """One finished trial: total seconds, the step split, measure seconds, cache counts."""
    total = (
        (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
    )
    build = t.user_attrs.get("build_seconds")
    metrics = t.user_attrs.get("metrics") or {}
    measured = build is not None and "duplicate_of" not in t.user_attrs
    out = {
        "number": t.number,
        "state": t.state.name.lower(),
        "total_s": total,
        "measured": measured,
        "duplicate": "duplicate_of" in t.user_attrs,
        "cache": t.user_attrs.get("cache"),
        "candidate": t.user_attrs.get("candidate"),
    }
    if measured:
        steps = {name: sum(build.get(k, 0.0) for k in keys) for name, keys in STEPS.items()}
        steps["measure"] = float(metrics.get("measure_seconds", 0.0))
        steps["other"] = max(0.0, total - sum(steps.values())) if total is not None else None
        out["steps"] = steps
        out["overhead_fraction"] = (total - steps["measure"]) / total if total else None
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import optuna

    fp = print_machine()
    fresh = not args.reuse
    studies_dir = Path(tempfile.mkdtemp(prefix="bench-cost-")) if fresh else Path(args.studies_dir or "studies")
    storage_dir = studies_dir if fresh else Path(tempfile.mkdtemp(prefix="bench-cost-db-"))
    storage = f"sqlite:///{storage_dir / 'study_cost.db'}"
    print(f"workload: {describe_workload(args)}")
    print(
        f"study: {args.n_trials} trials, sampler {args.sampler}, space {args.space}, objectives {args.objectives}; "
        f"{'fresh studies dir (empty cache)' if fresh else f'reusing {studies_dir} and its cache'}: {studies_dir}"
    )
    try:
        cmd = [
            *workload_cli_args(args, str(studies_dir)),
            "--study",
            "study_cost",
            "--storage",
            storage,
            "--n-trials",
            str(args.n_trials),
            "--sampler",
            args.sampler,
            "--space",
            args.space,
            "--objectives",
            args.objectives,
            "--json",
        ]
        print(f"running: python -m tuner {' '.join(cmd)}", flush=True)
        found, wall = run_tuner(cmd)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="study_cost", storage=storage)
        frozen = study.get_trials(deepcopy=True)  # read before the temporary storage is removed
    finally:
        if not args.keep:
            shutil.rmtree(studies_dir if fresh else storage_dir, ignore_errors=True)

    trials = [trial_figures(t) for t in frozen if t.datetime_complete is not None]
    starts = [t.datetime_start for t in frozen if t.datetime_start]
    ends = [t.datetime_complete for t in frozen if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    states: dict[str, int] = {}
    for t in trials:
        states[t["state"]] = states.get(t["state"], 0) + 1
    measured = [t for t in trials if t["measured"]]
    duplicates = sum(t["duplicate"] for t in trials)
    step_names = [*STEPS, "measure", "other"]
    step_median = {s: median([t["steps"][s] for t in measured]) for s in step_names}
    step_sum = {s: sum(t["steps"][s] or 0.0 for t in measured) for s in step_names}
    measured_total = sum(t["total_s"] for t in measured)
    hits = sum((t["cache"] or {}).get("hits", 0) for t in trials)
    misses = sum((t["cache"] or {}).get("misses", 0) for t in trials)
    remeasure_s = float((found.get("remeasure") or {}).get("seconds") or 0.0)
    result = {
        "wall_s": wall,
        "remeasure_s": remeasure_s,  # the end-of-study re-timing of the Pareto set in fresh processes
        "startup_s": wall - span - remeasure_s if span is not None else None,  # interpreter, data, baseline, storage
        "remeasure_within_5pct": (found.get("remeasure") or {}).get("fraction_within_5pct"),
        "trials_span_s": span,
        "trials": len(trials),
        "states": states,
        "measured_trials": len(measured),
        "duplicate_trials": duplicates,
        "median_trial_s": median([t["total_s"] for t in trials if t["state"] == "complete" and not t["duplicate"]]),
        "median_measured_trial_s": median([t["total_s"] for t in measured]),
        "median_step_s": step_median,
        "step_share": {s: (step_sum[s] / measured_total if measured_total else None) for s in step_names},
        "median_overhead_fraction": median([t["overhead_fraction"] for t in measured]),
        "cache": {"hits": hits, "misses": misses, "hit_rate": hits / (hits + misses) if hits + misses else None},
        "best_feasible_speedup": (found.get("best_feasible") or {}).get("speedup"),
        "pareto_size": len(found.get("pareto", [])),
    }

    print()
    print(
        f"wall time           {wall:8.1f} s  (startup before trial 0: data, baseline, storage: "
        f"{fmt(result['startup_s'], '.1f')} s; trials: {fmt(span, '.1f')} s; re-measure of the Pareto set: "
        f"{remeasure_s:.1f} s)"
    )
    print(
        f"trials              {len(trials):8d}    ({', '.join(f'{k} {v}' for k, v in states.items())}; "
        f"{len(measured)} built and measured, {duplicates} reused an earlier measurement)"
    )
    print(
        f"median trial        {fmt(result['median_trial_s'], '8.2f')} s  (complete trials, repeats left out; "
        f"built-and-measured ones: {fmt(result['median_measured_trial_s'], '.2f')} s)"
    )
    print("per built-and-measured trial:")
    print(f"  {'step':<13} {'median s':>9} {'share of trial time':>20}")
    for s in step_names:
        share = result["step_share"][s]
        print(f"  {s:<13} {fmt(step_median[s], '9.3f')} {fmt(None if share is None else 100 * share, '19.1f')}%")
    print(
        "  (medians of each step over trials, so they do not add up; shares are of the summed trial time; "
        "'other' = worker hand-off, Optuna and storage)"
    )
    ov = result["median_overhead_fraction"]
    print(f"median overhead beyond measuring: {fmt(None if ov is None else 100 * ov, '.1f')}% of a trial's time")
    rate = result["cache"]["hit_rate"]
    print(f"build cache: {hits} hits, {misses} misses, hit rate {fmt(None if rate is None else 100 * rate, '.1f')}%")
    sp = result["best_feasible_speedup"]
    print(
        f"study found: Pareto front of {result['pareto_size']}, best feasible speedup "
        f"{fmt(sp, '.2f')}x over the baseline"
    )
    if args.keep:
        print(f"kept: {studies_dir} (storage {storage})")
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "study_cost",
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "weights": args.weights,
                "train_steps": args.train_steps,
                "recover_steps": args.recover_steps,
                "seed": args.seed,
                "n_trials": args.n_trials,
                "sampler": args.sampler,
                "space": args.space,
                "fresh_cache": fresh,
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
