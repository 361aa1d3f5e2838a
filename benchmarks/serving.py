"""Serving under load: the best single-stream batch-1 configuration against the best one a latency-SLO study finds
(streams, requests in flight, batch and threads searched with the rest), at the same p95 budget, both measured
under the same load generator in fresh processes, alternated.

Full figures (resnet18 on imagenette at 224 px, its baseline trained by the tuner unless --weights is given):

    python benchmarks/serving.py --data ../shared/data/imagenette-224 --n-trials 20 --rounds 3

Quick check (64 px, a short baseline, few trials):

    python benchmarks/serving.py --data ../shared/data/imagenette-224 --resolution 64 --train-steps 100 \
        --n-trials 8 --single-trials 6 --rounds 3

single_stream  the fastest feasible trial (accuracy drop <= --max-drop points) of a study over --space with batch_size
               and streams fixed at 1 and requests at 0 (one call at a time), objectives accuracy_latency: what the
               tuner picks at batch 1 without serving settings
p95 budget     --p95-budget-ms, else 2x the single-stream configuration's open-loop p95 under the load generator (the
               median of --rounds fresh processes, before the SLO study): so it meets the budget itself
slo_pick       the feasible trial serving the most samples per second of a study over --space (default: serving, which
               adds streams and requests) with objectives/latency_slo.yaml, its budget set to the above and its
               accuracy drop to --max-drop; the study ends with its Pareto set re-measured in fresh processes under the
               same load (--remeasure-rounds, default 3)
both           re-measured --rounds times each, alternated (A B A B ...), each `python -m tuner measure --load --json` in
               a fresh process: the closed loop at the configuration's requests in flight, then requests arriving at
               Poisson times at half the rate it answered there (the open loop: the p95 the budget is about, queueing
               included); the figures are the medians of the rounds

Also printed: the load generator's own cost per request on a lane that does nothing (closed and open loop), to set
against a sub-millisecond model's latency, and whether the pick's p95 under load is reproduced within 10% by the
re-measure in fresh processes (the study's own, median of --remeasure-rounds, and these rounds').
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
    measure_once,
    median,
    print_machine,
    run_tuner,
    workload_cli_args,
)

WITHIN = 0.10  # "reproduced": the re-measured p95 within 10% of the study's


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p, studies_dir="studies")
    p.add_argument("--n-trials", type=int, default=20, help="trials of the SLO study, baseline included (default 20)")
    p.add_argument(
        "--single-trials", type=int, default=None, help="trials of the single-stream study (default: --n-trials)"
    )
    p.add_argument(
        "--space",
        default="serving",
        help="the space of the SLO study (default: serving); the single-"
        "stream study uses it with batch_size and streams 1, requests 0",
    )
    p.add_argument("--sampler", default="tpe", help="tpe | nsga2 | gp | random (default tpe)")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy drop allowed, points (default 1)")
    p.add_argument(
        "--p95-budget-ms",
        type=float,
        default=None,
        help="the p95 budget per request, ms (default: 2x the single-stream configuration's p95)",
    )
    p.add_argument("--rounds", type=int, default=3, help="fresh-process measurements of each config (default 3)")
    p.add_argument("--remeasure-rounds", type=int, default=3, help="the SLO study's own re-measure (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary spaces, objectives, configs and storage")
    args = p.parse_args(argv)
    if args.n_trials < 1 or args.rounds < 1 or (args.single_trials is not None and args.single_trials < 1):
        p.error("--n-trials, --single-trials and --rounds must be >= 1")
    if args.p95_budget_ms is not None and not args.p95_budget_ms > 0:
        p.error("--p95-budget-ms must be > 0")
    return args


def generator_overhead() -> dict[str, float]:
    """The load generator's own cost per request, on a lane that does nothing (microseconds)."""
    import numpy as np

    from tuner.measure.load import closed_window, open_window

    def noop() -> None:
        return None

    out: dict[str, float] = {}
    for name, lanes, in_flight in (
        ("closed_1_lane", [noop], 1),
        ("closed_2_lanes", [noop, noop], 2),
        ("closed_queued", [noop], 4),
    ):
        found, _, _ = closed_window(lanes, in_flight, 0.3)
        out[f"{name}_p50_us"] = float(np.percentile(found, 50) * 1000)
    found, _, _ = open_window([noop], 2000.0, 1.0, seed=0)
    out["open_2000_per_s_p50_us"] = float(np.percentile(found, 50) * 1000)
    out["open_2000_per_s_p95_us"] = float(np.percentile(found, 95) * 1000)
    return out


def write_space(source: str, out: Path, fixed: dict) -> Path:
    import yaml

    from tuner.candidate import read_yaml
    from tuner.space import load_space, resolve

    raw = {**read_yaml(resolve(source)), **fixed}
    out.write_text(f"# {resolve(source)} with {fixed} (benchmarks/serving.py)\n" + yaml.safe_dump(raw, sort_keys=False))
    load_space(str(out))  # fail here, not in the subprocess, if it does not load
    return out


def write_objectives(name: str, out: Path, budget_ms: float | None, max_drop: float) -> Path:
    import yaml

    from tuner.candidate import read_yaml
    from tuner.objectives import load_objectives, resolve

    raw = read_yaml(resolve(name))
    raw["constraints"]["accuracy_drop"] = {"max": max_drop}
    if budget_ms is not None:
        raw["constraints"]["open_p95_ms"] = {"max": float(budget_ms)}
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_objectives(str(out))
    return out


def study_pick(found: dict) -> tuple[dict, dict]:
    best = found.get("best_feasible")
    if not best:
        raise SystemExit(f"study {found.get('study')} has no feasible trial: raise --max-drop or --p95-budget-ms")
    return best["params"], best


def summarize(config: dict, rounds: list[dict]) -> dict:
    good = [r for r in rounds if "error" not in r]
    out: dict = {"config": config, "rounds": len(good), "failed_rounds": len(rounds) - len(good)}
    if not good:
        return {
            **out,
            "error": rounds[0]["error"] if rounds else "no rounds",
            "throughput": None,
            "p50_ms": None,
            "p95_ms": None,
            "accuracy": None,
        }
    return {
        **out,
        "throughput": median([r["open_throughput"] for r in good]),  # samples/s answered under Poisson arrivals
        "p50_ms": median([r["open_p50_ms"] for r in good]),  # per request (one batch), queueing included
        "p95_ms": median([r["open_p95_ms"] for r in good]),
        "accuracy": median([r["accuracy"] for r in good]),
        "capacity": median([r["load_throughput"] for r in good]),  # samples/s in the closed loop
        "closed_p95_ms": median([r["load_p95_ms"] for r in good]),
        "round_p95_ms": [r["open_p95_ms"] for r in good],
        "round_throughput": [r["open_throughput"] for r in good],
        "streams": good[0]["streams"],
        "requests": good[0]["requests"],
        "batch_size": good[0]["batch_size"],
        "threads": good[0]["threads"],
        "executed_precision": good[0]["executed_precision"],
        "quiet_rounds": sum(bool(r["load"]["quiet"]) for r in good),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import yaml

    fp = print_machine()
    overhead = generator_overhead()
    print(
        "load generator's own cost per request (a lane that does nothing): "
        + ", ".join(f"{k.removesuffix('_us').replace('_', ' ')} {v:.1f} us" for k, v in overhead.items()),
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    storage = f"sqlite:///{tmp / 'studies.db'}"
    print(f"workload: {describe_workload(args)}; studies dir (cache) {args.studies_dir}")
    try:
        common = [*workload_cli_args(args), "--storage", storage, "--sampler", args.sampler, "--json"]
        single_space = write_space(args.space, tmp / "single.yaml", {"batch_size": 1, "streams": 1, "requests": 0})
        latency = write_objectives("accuracy_latency", tmp / "latency.yaml", None, args.max_drop)
        n_single = args.single_trials or args.n_trials
        print(f"single-stream study at batch 1: {n_single} trials, space {single_space}", flush=True)
        found, wall = run_tuner(
            [
                *common,
                "--study",
                "serving_single",
                "--space",
                str(single_space),
                "--objectives",
                str(latency),
                "--n-trials",
                str(n_single),
                "--remeasure-rounds",
                "0",
            ]
        )
        single, single_trial = study_pick(found)
        print(f"  done in {wall:.0f} s: trial #{single_trial['number']} {single}", flush=True)
        configs = {"single_stream": tmp / "single_stream.yaml", "slo_pick": tmp / "slo_pick.yaml"}
        configs["single_stream"].write_text(yaml.safe_dump(single, sort_keys=False))

        budget = args.p95_budget_ms
        if budget is None:  # a median of fresh processes: one draw of a shared host's tail would set it by chance
            first = [measure_once(args, configs["single_stream"], ["--load"]) for _ in range(args.rounds)]
            bad = [r["error"] for r in first if "error" in r]
            if bad:
                raise SystemExit(f"the single-stream configuration failed under load: {bad[0]}")
            seen = [r["open_p95_ms"] for r in first]
            budget = 2 * median(seen)
            print(
                f"  under load: p95 {median(seen):.3f} ms (median of {args.rounds} fresh processes: "
                f"{', '.join(f'{v:.3f}' for v in seen)}): p95 budget {budget:.3f} ms (2x)",
                flush=True,
            )
        slo = write_objectives("latency_slo", tmp / "slo.yaml", budget, args.max_drop)
        print(
            f"SLO study: {args.n_trials} trials, space {args.space}, p95 budget {budget:.3f} ms, drop <= "
            f"{args.max_drop:g} points",
            flush=True,
        )
        found, wall = run_tuner(
            [
                *common,
                "--study",
                "serving_slo",
                "--space",
                args.space,
                "--objectives",
                str(slo),
                "--n-trials",
                str(args.n_trials),
                "--remeasure-rounds",
                str(args.remeasure_rounds),
            ]
        )
        pick, pick_trial = study_pick(found)
        print(
            f"  done in {wall:.0f} s: trial #{pick_trial['number']} {pick} "
            f"({pick_trial['metrics']['open_throughput']:.0f} samples/s, p95 "
            f"{pick_trial['metrics']['open_p95_ms']:.3f} ms in the study)",
            flush=True,
        )
        again = ((found.get("remeasure") or {}).get("trials") or {}).get(str(pick_trial["number"])) or {}
        configs["slo_pick"].write_text(yaml.safe_dump(pick, sort_keys=False))

        rounds: dict[str, list[dict]] = {name: [] for name in configs}
        print(f"re-measuring both under load: {args.rounds} rounds, alternated, one fresh process each", flush=True)
        for r in range(args.rounds):
            for name, path in configs.items():
                out = measure_once(args, path, ["--load"])
                rounds[name].append(out)
                what = (
                    f"{out['open_throughput']:.0f} samples/s, p50 {out['open_p50_ms']:.3f} p95 "
                    f"{out['open_p95_ms']:.3f} ms (closed loop {out['load_throughput']:.0f} samples/s, p95 "
                    f"{out['load_p95_ms']:.3f})"
                    if "error" not in out
                    else f"FAILED: {out['error']}"
                )
                print(f"  round {r + 1}/{args.rounds} {name:<13} {what}", flush=True)
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = {name: summarize(cfg, rounds[name]) for name, cfg in (("single_stream", single), ("slo_pick", pick))}
    s, p = rows["single_stream"], rows["slo_pick"]
    ratio = p["throughput"] / s["throughput"] if p.get("throughput") and s.get("throughput") else None
    study_p95 = float(pick_trial["metrics"]["open_p95_ms"])
    remeasured = ((again.get("load") or {}).get("open_p95_ms") or {}).get("median")
    reproduction = {
        "study_p95_ms": study_p95,
        "remeasure_p95_ms": remeasured,
        "remeasure_rel_diff": (remeasured - study_p95) / study_p95 if remeasured else None,
        "remeasure_rounds": ((again.get("load") or {}).get("host") or {}).get("rounds"),
        "rounds_p95_ms": p.get("p95_ms"),
        "rounds_rel_diff": (p["p95_ms"] - study_p95) / study_p95 if p.get("p95_ms") else None,
    }
    reproduction["within_10pct"] = (
        reproduction["remeasure_rel_diff"] is not None and abs(reproduction["remeasure_rel_diff"]) <= WITHIN
    )

    print()
    print(
        f"{'row':<13} {'placement':<9} {'prec':<5} {'prune':>5} {'streams':>7} {'req':>3} {'bs':>3} {'thr':>3} "
        f"{'accuracy':>8} {'samples/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p95 rounds':>17} {'capacity':>9}"
    )
    for name, row in rows.items():
        c = row["config"]
        head = f"{name:<13} {c['placement']:<9} {c['precision']:<5} {c['prune_ratio']:>5.2f}"
        if "error" in row:
            print(f"{head} FAILED: {row['error']}")
            continue
        spread = f"{min(row['round_p95_ms']):.3f}-{max(row['round_p95_ms']):.3f}"
        print(
            f"{head} {row['streams']:>7} {row['requests']:>3} {row['batch_size']:>3} {row['threads']:>3} "
            f"{row['accuracy']:>8.2%} {row['throughput']:>10.0f} {row['p50_ms']:>8.3f} {row['p95_ms']:>8.3f} "
            f"{spread:>17} {row['capacity']:>9.0f}"
        )
    print(
        f"(medians of {args.rounds} rounds, one fresh process per row and round, alternated; samples/s and p50/p95 "
        f"per request in the open loop: Poisson arrivals at half the closed loop's rate; capacity: the closed loop's "
        f"samples/s at the row's requests in flight; threads per stream)"
    )
    same_run = p.get("p95_ms") is not None and s.get("p95_ms") is not None and p["p95_ms"] <= 2 * s["p95_ms"]
    print(
        f"in these rounds the pick's p95 is {fmt(p.get('p95_ms'), '.3f')} ms against the single-stream "
        f"configuration's {fmt(s.get('p95_ms'), '.3f')} ms: " + ("within" if same_run else "OVER") + " 2x it"
    )
    print(
        f"p95 budget {budget:.3f} ms: the SLO pick serves {fmt(ratio, '.2f')}x the single-stream configuration's "
        f"samples per second at p95 {fmt(p.get('p95_ms'), '.3f')} ms ("
        + ("within" if p.get("p95_ms") is not None and p["p95_ms"] <= budget else "OVER")
        + " the budget)"
    )
    rel = {
        k: fmt(100 * v if v is not None else None, "+.1f")
        for k, v in (("remeasure", reproduction["remeasure_rel_diff"]), ("rounds", reproduction["rounds_rel_diff"]))
    }
    print(
        f"the pick's p95 under load: study {study_p95:.3f} ms, re-measured in fresh processes (the study's, median "
        f"of {reproduction['remeasure_rounds']}) {fmt(remeasured, '.3f')} ms ({rel['remeasure']}%), these rounds' "
        f"median {fmt(p.get('p95_ms'), '.3f')} ms ({rel['rounds']}%): "
        + ("within" if reproduction["within_10pct"] else "NOT within")
        + " 10%"
    )
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "serving",
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "weights": args.weights,
                "train_steps": args.train_steps,
                "recover_steps": args.recover_steps,
                "seed": args.seed,
                "n_trials": args.n_trials,
                "single_trials": args.single_trials or args.n_trials,
                "space": args.space,
                "sampler": args.sampler,
                "max_drop_points": args.max_drop,
                "rounds": args.rounds,
                "p95_budget_ms": budget,
                "single_stream": s,
                "slo_pick": p,
                "throughput_ratio": ratio,
                "pick_within_budget": p.get("p95_ms") is not None and p["p95_ms"] <= budget,
                "pick_serves_more": ratio is not None and ratio > 1,
                "pick_within_2x_same_rounds": same_run,
                "reproduction": reproduction,
                "study_trials": {"single_stream": single_trial["number"], "slo_pick": pick_trial["number"]},
                "generator_overhead_us": overhead,
            }
        )
    )


if __name__ == "__main__":
    main()
