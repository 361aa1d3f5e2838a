"""The recovery table: prune ratio x ratio profile x recovery budget -> accuracy, MACs and latency of the
recovered model in one precision and placement (ov-cpu int8 by default), each row built and measured by
`tuner measure` in a fresh process (the recoveries are cached, so a second run only re-times).

    python benchmarks/recovery.py --data ../shared/data/imagenette-224 --resolution 128 \
        --weights studies/weights/resnet18-imagenette-128.pt --ratios 0.2,0.4,0.6 --budgets none,short,long

Budgets: `none` (pruned, no distillation: --recover-epochs 0), `short` (what every new architecture gets in a
study) and `long` (what the study spends on a front contender, LONG_FACTOR times the short). The last line is
one JSON object: the rows, the baseline (unpruned, same precision and placement) and the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_workload_args, describe_workload, machine_json, measure_config, print_machine


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p)
    p.add_argument("--ratios", default="0.2,0.4,0.6", help="prune ratios, comma-separated")
    p.add_argument("--profiles", default="uniform", help="ratio profiles, comma-separated (uniform, global)")
    p.add_argument("--budgets", default="none,short,long", help="none | short | long, comma-separated")
    p.add_argument("--drop-blocks", type=int, default=0, help="also drop this many blocks (a shallower student)")
    p.add_argument("--placement", default="ov-cpu")
    p.add_argument("--precision", default="int8")
    p.add_argument("--threads", type=int, default=1, help="threads of the timed runs (default 1)")
    args = p.parse_args(argv)
    fp = print_machine()
    print(f"workload: {describe_workload(args)}")
    fixed = {"placement": args.placement, "precision": args.precision, "threads": args.threads, "batch_size": 1}
    rows = [("baseline", "-", "-", {})]
    for ratio in [float(r) for r in args.ratios.split(",")]:
        for profile in args.profiles.split(","):
            for budget in args.budgets.split(","):
                rows.append((f"{ratio:g}", profile, budget, {"prune_ratio": ratio, "prune_profile": profile,
                                                              "drop_blocks": args.drop_blocks,
                                                              "recovery": "short" if budget == "none" else budget}))
    out = []
    print(f"{'ratio':>5} {'profile':<8} {'budget':<6} {'epochs':>6} {'accuracy':>8} {'drop pt':>7} {'MACs':>12} "
          f"{'ms/sample':>9} {'still improving':>15}")
    base_acc = None
    for ratio, profile, budget, params in rows:
        m = measure_config(args, {**fixed, **params}, **({"recover_epochs": 0.0} if budget == "none" else {}))
        if "error" in m:
            print(f"{ratio:>5} {profile:<8} {budget:<6} FAILED: {m['error']}", flush=True)
            out.append({"ratio": ratio, "profile": profile, "budget": budget, "error": m["error"]})
            continue
        base_acc = m["accuracy"] if base_acc is None else base_acc
        rec = m.get("recovery") or {}
        row = {"ratio": ratio, "profile": profile, "budget": budget, "epochs": rec.get("epochs", 0.0),
               "accuracy": m["accuracy"], "drop_points": 100 * (base_acc - m["accuracy"]), "macs": m["macs"],
               "per_sample_ms": m["per_sample_ms"], "latency_ci_ms": m["latency_ci_ms"],
               "still_improving": rec.get("still_improving"), "executed_precision": m["executed_precision"],
               "dropped_blocks": m.get("dropped_blocks")}
        out.append(row)
        print(f"{ratio:>5} {profile:<8} {budget:<6} {row['epochs']:>6.2f} {m['accuracy']:>8.2%} "
              f"{row['drop_points']:>7.2f} {m['macs']:>12,} {m['per_sample_ms']:>9.4f} "
              f"{row['still_improving']!s:>15}", flush=True)
    print(json.dumps({**machine_json(fp), "benchmark": "recovery", "model": args.model, "data": args.data,
                      "resolution": args.resolution, "weights": args.weights, "recover_epochs": args.recover_epochs,
                      "placement": args.placement, "precision": args.precision, "threads": args.threads,
                      "rows": out}))


if __name__ == "__main__":
    main()
