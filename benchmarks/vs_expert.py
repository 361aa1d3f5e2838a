"""The tuner against the baseline and a hand-made expert pipeline, at batch size 1: the best feasible speedup
at <= 1 point accuracy drop, re-measured beside both references in the same run.

Full figures (resnet18 on digits at 32 px, as the default study; 20-trial studies, 5 rounds; then on real
photos, a baseline trained by the tuner at 96 px):

    python benchmarks/vs_expert.py --n-trials 20 --rounds 5
    python benchmarks/vs_expert.py --data ../shared/data/imagenette-224 --resolution 96 --train-steps 300 \
        --n-trials 20 --rounds 3

Quick check (the tests' tiny CNN at 16 px):

    python benchmarks/vs_expert.py --model tests/tiny_models.py:conv_net --resolution 16 --n-trials 6 --rounds 2

baseline  fp32 torch-cpu, unpruned, no folding, batch 1, every core (what the user has before tuning)
expert    ONNX Runtime int8 static QDQ per-channel (calibrated), graph_opt all, unpruned, batch 1, every core:
          Candidate(precision="int8", placement="ort-cpu", graph_opt="all", batch_size=1)
expert-ov the same calibrated QDQ file run by hand in OpenVINO (ov-cpu int8, precision hint set), unpruned, batch 1,
          at 1 thread and at every core: what an expert gets in ten lines. The fastest of the three expert rows
          is `best_expert`, and `speedup_vs_best_expert` is the headline (`speedup_vs_expert` stays vs ORT int8)
tuner     the fastest feasible trial (accuracy drop within --objectives' constraint, 1 point by default) of a
          study over the default space restricted to batch_size 1 (a temporary copy of --space with
          `batch_size: 1`), run as a user would: `python -m tuner --json --space TMP --n-trials N`

The study's own figure for its pick is the minimum over noisy trials (it is optimistic), so all three
are re-measured, each in its own fresh subprocess (`python -m tuner measure --json --config FILE`, the
same workload and --studies-dir, so the cached baseline and builds are reused), alternated over --rounds
(A B C, A B C, ...) to spread a shared machine's slow phases over every row; the medians are reported.
Beside it, the best batched figure (the fastest feasible point of a default-space study, any batch size)
is re-measured the same way, in the same rotation (--skip-batched omits it); per-sample latency at a
batch > 1 is not a batch-1 latency, so it is shown apart and not in the headline speedups.
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p, studies_dir="studies")
    p.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="trials per study, baseline included (default 20; with --budget: no cap)",
    )
    p.add_argument("--budget", help="each study's time budget, its re-measure included (90s, 20m): tuner's --budget")
    p.add_argument("--sampler", default="tpe", help="tpe | nsga2 | gp | random (default tpe)")
    p.add_argument("--space", default="default", help="the space to restrict to batch 1 (default: default)")
    p.add_argument("--objectives", default="accuracy_latency", help="objectives name or YAML path")
    p.add_argument("--rounds", type=int, default=3, help="re-measurement rounds, each row once per round")
    p.add_argument("--skip-batched", action="store_true", help="omit the default-space (batched) study")
    p.add_argument("--keep", action="store_true", help="keep the temporary space, configs and study storage")
    args = p.parse_args(argv)
    if args.n_trials is None and not args.budget:
        args.n_trials = 20
    if (args.n_trials is not None and args.n_trials < 1) or args.rounds < 1:
        p.error("--n-trials and --rounds must be >= 1")
    return args


def batch1_space(source: str, out: Path) -> Path:
    """A copy of the space file with batch_size fixed at 1."""
    import yaml

    from tuner.candidate import read_yaml
    from tuner.space import load_space, resolve

    raw = read_yaml(resolve(source))
    raw["batch_size"] = 1
    out.write_text(
        "# "
        f"{resolve(source)} with batch_size fixed at 1 (benchmarks/vs_expert.py)\n"
        + yaml.safe_dump(raw, sort_keys=False)
    )
    load_space(str(out))  # fail here, not in the subprocess, if it does not load
    return out


def summarize(params: dict, rounds: list[dict], study_figure: dict | None = None) -> dict:
    good = [r for r in rounds if "error" not in r]
    out: dict = {"params": params, "rounds": len(good), "failed_rounds": len(rounds) - len(good)}
    if not good:
        return {**out, "error": rounds[0]["error"] if rounds else "no rounds", "accuracy": None, "per_sample_ms": None}
    out.update(
        {
            "accuracy": median([r["accuracy"] for r in good]),
            "per_sample_ms": median([r["per_sample_ms"] for r in good]),
            "min_per_sample_ms": min(r["per_sample_ms"] for r in good),
            "round_per_sample_ms": [r["per_sample_ms"] for r in good],
            "executed_precision": "/".join(sorted({r["executed_precision"] for r in good})),
            "threads": good[0]["threads"],
            "size_mb": good[0]["size_mb"],
            "param_count": good[0]["params"],  # "params" is the configuration
            "macs": good[0].get("macs"),
        }
    )
    if study_figure is not None:
        out["study"] = study_figure
    return out


def study_pick(found: dict) -> tuple[dict, dict]:
    best = found.get("best_feasible")
    if not best:
        raise SystemExit(f"study {found.get('study')} has no feasible trial")
    m = best["metrics"]
    return best["params"], {
        "trial": best["number"],
        "accuracy": m["accuracy"],
        "per_sample_ms": m["per_sample_ms"],
        "speedup": best.get("speedup"),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import yaml

    from tuner.candidate import Candidate
    from tuner.study.objective import baseline_candidate

    fp = print_machine()
    experts = {
        "expert": Candidate(precision="int8", placement="ort-cpu", graph_opt="all", batch_size=1),
        "expert-ov-1t": Candidate(precision="int8", placement="ov-cpu", batch_size=1, threads=1),
        "expert-ov": Candidate(precision="int8", placement="ov-cpu", batch_size=1, threads=0),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-vs-expert-"))
    storage = f"sqlite:///{tmp / 'studies.db'}"
    print(f"workload: {describe_workload(args)}; studies dir (cache) {args.studies_dir}")
    try:
        space = batch1_space(args.space, tmp / "space-bs1.yaml")
        common = [
            *workload_cli_args(args),
            "--storage",
            storage,
            "--sampler",
            args.sampler,
            "--objectives",
            args.objectives,
            "--json",
        ]
        common += ["--n-trials", str(args.n_trials)] if args.n_trials else []
        common += ["--budget", args.budget] if args.budget else []
        limit = f"{args.n_trials or 'any number of'} trials" + (f" within {args.budget}" if args.budget else "")
        print(f"study at batch 1: {limit}, sampler {args.sampler}, space {space}", flush=True)
        found_bs1, wall_bs1 = run_tuner([*common, "--study", "vs_expert_bs1", "--space", str(space)])
        pick, pick_study = study_pick(found_bs1)
        print(
            f"  done in {wall_bs1:.0f} s: pick trial #{pick_study['trial']} {pick} "
            f"({pick_study['per_sample_ms']:.4f} ms/sample, {pick_study['accuracy']:.2%} in the study)",
            flush=True,
        )
        rows = {
            "baseline": baseline_candidate().to_dict(),
            **{k: c.to_dict() for k, c in experts.items()},
            "tuner": pick,
        }
        batched_study = None
        if not args.skip_batched:
            print(f"study over {args.space} (any batch size): {limit}", flush=True)
            found_any, wall_any = run_tuner([*common, "--study", "vs_expert_batched", "--space", args.space])
            rows["batched"], batched_study = study_pick(found_any)
            print(
                f"  done in {wall_any:.0f} s: pick trial #{batched_study['trial']} {rows['batched']} "
                f"({batched_study['per_sample_ms']:.4f} ms/sample in the study)",
                flush=True,
            )

        configs = {}
        for name, params in rows.items():
            configs[name] = tmp / f"{name}.yaml"
            configs[name].write_text(yaml.safe_dump(params, sort_keys=False))
        results: dict[str, list[dict]] = {name: [] for name in rows}
        print(f"re-measuring {', '.join(rows)}: {args.rounds} rounds, one fresh process each", flush=True)
        for r in range(args.rounds):
            for name in rows:
                out = measure_once(args, configs[name])
                results[name].append(out)
                what = (
                    f"{out['per_sample_ms']:.4f} ms/sample ({out['latency_ms']:.4f} ms per batch of "
                    f"{out['batch_size']}, n={out['samples']}), {out['accuracy']:.2%}"
                    if "error" not in out
                    else f"FAILED: {out['error']}"
                )
                print(f"  round {r + 1}/{args.rounds} {name:<8} {what}", flush=True)
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summary = {
        name: summarize(rows[name], results[name], {"tuner": pick_study, "batched": batched_study}.get(name))
        for name in rows
    }
    base, exp, tun = summary["baseline"], summary["expert"], summary["tuner"]

    def ratio(a: dict, b: dict) -> float | None:
        return a["per_sample_ms"] / b["per_sample_ms"] if a.get("per_sample_ms") and b.get("per_sample_ms") else None

    ref_acc = base.get("accuracy")
    for s in summary.values():
        s["accuracy_drop_points"] = (
            100 * (ref_acc - s["accuracy"]) if ref_acc is not None and s.get("accuracy") is not None else None
        )
        s["speedup_vs_baseline"] = ratio(base, s)
    speedup_vs_baseline, speedup_vs_expert = ratio(base, tun), ratio(exp, tun)
    timed_experts = [k for k in experts if summary[k].get("per_sample_ms")]
    best_name = min(timed_experts, key=lambda k: summary[k]["per_sample_ms"], default=None)
    best_expert = (
        {
            "label": best_name,
            "accuracy": summary[best_name]["accuracy"],
            "per_sample_ms": summary[best_name]["per_sample_ms"],
            "params": summary[best_name]["params"],
        }
        if best_name
        else None
    )
    speedup_vs_best_expert = ratio(summary[best_name], tun) if best_name else None

    print()
    print(
        f"{'row':<12} {'placement':<9} {'prec':<5} {'prune':>5} {'bs':>3} {'fold':>4} {'graph':<8} {'thr':>3} "
        f"{'accuracy':>8} {'drop pt':>7} {'ms/sample':>10} {'rounds min-max':>17} {'vs base':>7}"
    )
    for name, s in summary.items():
        c = s["params"]
        head = (
            f"{name:<12} {c['placement']:<9} {c['precision']:<5} {c['prune_ratio']:>5.2f} {c['batch_size']:>3} "
            f"{'y' if c['fold_bn'] else 'n':>4} {c['graph_opt'] if c['placement'].startswith('ort') else '-':<8} "
            f"{c['threads']:>3}"
        )
        if "error" in s:
            print(f"{head} FAILED: {s['error']}")
            continue
        rng = f"{min(s['round_per_sample_ms']):.4f}-{max(s['round_per_sample_ms']):.4f}"
        print(
            f"{head} {s['accuracy']:>8.2%} {fmt(s['accuracy_drop_points'], '7.2f')} {s['per_sample_ms']:>10.4f} "
            f"{rng:>17} {fmt(s['speedup_vs_baseline'], '6.2f')}x"
        )
    print(
        f"(medians of {args.rounds} rounds, one fresh process per row and round, rows alternated; "
        f"drop in points vs the re-measured baseline)"
    )
    unstable = [
        name
        for name, s in summary.items()
        if s.get("round_per_sample_ms") and max(s["round_per_sample_ms"]) > 1.5 * min(s["round_per_sample_ms"])
    ]
    if unstable:
        print(
            f"WARNING: rounds disagree by more than 1.5x for {', '.join(unstable)} (a busy machine?): the "
            f"medians are unreliable; rerun on a quiet machine or with more --rounds. Best of rounds: "
            + ", ".join(
                f"{n} {summary[n]['min_per_sample_ms']:.4f}" for n in summary if summary[n].get("min_per_sample_ms")
            )
            + " ms/sample"
        )
    print(
        f"tuner at batch 1: {fmt(speedup_vs_baseline, '.2f')}x the baseline, {fmt(speedup_vs_expert, '.2f')}x the "
        f"expert pipeline (study figure for its pick: {pick_study['per_sample_ms']:.4f} ms/sample, "
        f"re-measured {fmt(tun.get('per_sample_ms'), '.4f')})"
    )
    if best_expert:
        print(
            f"best hand-made anchor: {best_name} {best_expert['per_sample_ms']:.4f} ms/sample, "
            f"{best_expert['accuracy']:.2%}; tuner at batch 1: {fmt(speedup_vs_best_expert, '.2f')}x it"
        )
    fewer_macs = 1 - tun["macs"] / base["macs"] if tun.get("macs") and base.get("macs") else None
    if fewer_macs is not None:
        print(
            f"tuner's pick: {tun['macs'] / 1e6:.0f} M MACs per sample against the baseline's {base['macs'] / 1e6:.0f} M:"
            f" {fewer_macs:.0%} fewer"
        )
    if exp.get("accuracy_drop_points") is not None:
        print(
            f"expert: drop {exp['accuracy_drop_points']:.2f} points "
            f"({'within' if exp['accuracy_drop_points'] <= 1.0 else 'OUTSIDE'} the 1-point budget)"
        )
    if "batched" in summary and summary["batched"].get("per_sample_ms"):
        b = summary["batched"]
        print(
            f"best batched (default space, batch {b['params']['batch_size']}): {b['per_sample_ms']:.4f} ms/sample "
            f"per sample, {fmt(b['speedup_vs_baseline'], '.2f')}x the batch-1 baseline, "
            f"{fmt(ratio(exp, b), '.2f')}x the batch-1 expert (throughput, not batch-1 latency)"
        )
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "vs_expert",
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "weights": args.weights,
                "train_steps": args.train_steps,
                "recover_steps": args.recover_steps,
                "seed": args.seed,
                "n_trials": args.n_trials,
                "budget": args.budget,
                "study_wall_s": round(wall_bs1, 1),
                "sampler": args.sampler,
                "objectives": args.objectives,
                "rounds": args.rounds,
                "baseline": base,
                "expert": exp,
                "tuner": tun,
                "batched": summary.get("batched"),
                "speedup_vs_baseline": speedup_vs_baseline,
                "speedup_vs_expert": speedup_vs_expert,
                "experts": {k: summary[k] for k in experts},
                "best_expert": best_expert,
                "speedup_vs_best_expert": speedup_vs_best_expert,
                "tuner_fewer_macs": fewer_macs,
                "batched_speedup_vs_baseline": (summary.get("batched") or {}).get("speedup_vs_baseline"),
                "unstable_rows": unstable,
            }
        )
    )


if __name__ == "__main__":
    main()
