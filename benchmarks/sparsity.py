"""Unstructured weight sparsity on this machine: per sparsity level, the recovered model's accuracy, its latency
in every CPU runtime and precision, and its artifact's size as stored and zipped; each row built and measured by
`tuner measure` in a fresh process (recoveries cached), the levels alternated over --rounds.

    python benchmarks/sparsity.py --data ../shared/data/imagenette-224 --resolution 128 \
        --weights studies/weights/resnet18-imagenette-128.pt --levels 0,0.5,0.7,0.9 --rounds 2

The question it answers is whether any runtime here turns zeros into speed (the study keeps a sparse candidate
only where it pays in latency, or in size when the objectives value size). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_workload_args, describe_workload, machine_json, measure_config, median, print_machine

RUNS = (("ort-cpu", "fp32"), ("ort-cpu", "int8"), ("ov-cpu", "fp32"), ("ov-cpu", "int8"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p)
    p.add_argument("--levels", default="0,0.5,0.7,0.9", help="sparsity levels, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    fp = print_machine()
    print(f"workload: {describe_workload(args)}")
    levels = [float(x) for x in args.levels.split(",")]
    seen: dict[tuple[float, str, str], list[dict]] = {}
    for r in range(args.rounds):
        for placement, precision in RUNS:
            for level in levels:
                m = measure_config(
                    args,
                    {
                        "sparsity": level,
                        "placement": placement,
                        "precision": precision,
                        "threads": args.threads,
                        "batch_size": 1,
                    },
                )
                seen.setdefault((level, placement, precision), []).append(m)
                what = m.get("error") or f"{m['accuracy']:.2%}, {m['per_sample_ms']:.4f} ms"
                print(f"  round {r + 1} sparsity {level:.2f} {placement} {precision}: {what}", flush=True)
    rows = []
    print(
        f"\n{'sparsity':>8} {'runtime':<13} {'accuracy':>8} {'ms/sample':>9} {'vs dense':>8} {'size MB':>8} "
        f"{'zipped MB':>9}"
    )
    for placement, precision in RUNS:
        dense = None
        for level in levels:
            good = [m for m in seen[(level, placement, precision)] if "error" not in m]
            if not good:
                continue
            row = {
                "sparsity": level,
                "placement": placement,
                "precision": precision,
                "accuracy": good[0]["accuracy"],
                "per_sample_ms": median([m["per_sample_ms"] for m in good]),
                "size_mb": good[0]["size_mb"],
                "compressed_mb": good[0]["compressed_mb"],
            }
            dense = row["per_sample_ms"] if level == 0 else dense
            row["speedup_vs_dense"] = dense / row["per_sample_ms"] if dense else None
            rows.append(row)
            print(
                f"{level:>8.2f} {placement + ' ' + precision:<13} {row['accuracy']:>8.2%} {row['per_sample_ms']:>9.4f} "
                f"{(row['speedup_vs_dense'] or 0):>7.2f}x {row['size_mb']:>8.2f} {row['compressed_mb']:>9.2f}"
            )
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "sparsity",
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "weights": args.weights,
                "threads": args.threads,
                "rounds": args.rounds,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
