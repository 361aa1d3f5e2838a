"""The recovery table, in steps: per prune ratio and step budget, the accuracy the recovered model reaches, the
steps it took before its proxy stopped improving, and what it cost, on one train split. Run it on a split and on
one ten times larger: what a recovery buys and costs per step should not depend on the split's size.

    python benchmarks/recovery.py --data ../shared/data/imagenette-224 --resolution 96 \
        --weights studies/weights/resnet18-imagenette-96.pt --ratios 0.2,0.4,0.6 --steps 0,25,50,100,200,400

Each row prunes the model (`--profile`), distils it for a budget of k optimizer steps (batch 64) exactly as a
study's short recovery does (tuner.passes.recover: warm-up then cosine over k steps, early stop on the train
slice kept apart, best weights kept) and scores it in torch fp32 on the validation split the study picks on.
k = 0 is the pruned model untrained. `default` names the budget a study gives that ratio with the default
`--recover-steps`. Latency is not measured: it depends on the architecture, not on how long it was distilled
(benchmarks/compression.py and vs_expert.py time it). The last line is one JSON object: the rows and the machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_workload_args, describe_workload, machine_json, print_machine, workload_spec


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p)
    p.add_argument("--ratios", default="0.2,0.4,0.6", help="prune ratios, comma-separated")
    p.add_argument("--profile", default="uniform", help="ratio profile (uniform, global)")
    p.add_argument("--steps", default="0,25,50,100,200", help="recovery budgets in optimizer steps, comma-separated")
    args = p.parse_args(argv)
    ratios, budgets = [float(r) for r in args.ratios.split(",")], [int(k) for k in args.steps.split(",")]
    fp = print_machine()
    print(f"workload: {describe_workload(args)}")

    import torch

    from tuner import logs
    from tuner.passes.prune import count, prune
    from tuner.passes.recover import budget_steps, recover, removed_share
    from tuner.train import torch_accuracy
    from tuner.workload import load_workload

    spec = workload_spec(args)
    with logs.to(logs.stderr):
        w = load_workload(spec)
    reference, example = w.reference_model(), torch.from_numpy(w.data.example())
    ref_macs, _ = count(reference, example)
    base = torch_accuracy(reference, w.data)
    print(
        f"train split {len(w.data.train):,} images, val {len(w.data.val):,}; reference {base:.2%} top-1, "
        f"{ref_macs:,} MACs"
    )
    print(
        f"{'ratio':>5} {'budget':>6} {'default':>7} {'steps':>5} {'stopped':<8} {'accuracy':>8} {'drop pt':>7} "
        f"{'seconds':>8} {'s/step':>6} {'MACs':>13}"
    )
    rows = []
    for ratio in ratios:
        for k in budgets:
            model = copy.deepcopy(reference)
            prune(model, ratio, example, args.profile)
            macs, _ = count(model, example)
            removed = removed_share(macs, ref_macs, 0.0)
            record = recover(model, reference, w.data, removed, k, "short", spec.seed) if k else None
            acc = torch_accuracy(model, w.data)
            row = {
                "ratio": ratio,
                "profile": args.profile,
                "budget": k,
                "macs": macs,
                "removed": removed,
                "default_budget": budget_steps(removed, spec.recover_steps, "short", len(w.data.train)),
                "accuracy": acc,
                "drop_points": 100 * (base - acc),
                "recovery": record.to_dict() if record else None,
            }
            rows.append(row)
            steps, seconds = (record.steps, record.seconds) if record else (0, 0.0)
            print(
                f"{ratio:>5g} {k:>6} {row['default_budget']:>7} {steps:>5} "
                f"{record.stopped if record else '-':<8} {acc:>8.2%} {row['drop_points']:>7.2f} {seconds:>8.1f} "
                f"{seconds / max(1, steps):>6.2f} {macs:>13,}",
                flush=True,
            )
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "recovery",
                "model": args.model,
                "data": args.data,
                "train_images": len(w.data.train),
                "resolution": w.data.resolution,
                "weights": args.weights,
                "recover_steps": spec.recover_steps,
                "reference_accuracy": base,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
