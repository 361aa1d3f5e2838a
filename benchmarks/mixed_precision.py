"""Mixed precision where uniform int8 cannot hold accuracy: uniform int8, the k most int8-sensitive layers kept in
float (k from --ks), and the float options (fp32, and bf16 where the placement runs it here), for one build
(--prune-ratio) on one placement, each re-measured in fresh processes, alternated over --rounds. Uniform int8
(`int8`) quantizes every op ORT's quantizer takes; `int8-compute` only the inputs of Conv / Gemm / MatMul (the ops
between them stay float); the float_layers rows quantize --int8-ops. Also the three calibration methods and
calibration on 32, 64 and 128 images at uniform int8 (accuracy and calibration time): the evidence behind the
defaults.

Pick a case where uniform int8 loses more than a point (a transformer, a deep prune ratio, a depthwise model), e.g.

    ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python benchmarks/mixed_precision.py --model benchmarks/models.py:small_vit \
        --weights W --data ../shared/data/imagenette-224 --resolution 96 --ks 1,2,4,6,8
    python benchmarks/mixed_precision.py --model tests/tiny_models.py:mobile_net --resolution 16 --ks 1,2,3

(the oneDNN cap: a VNNI-only host, where bf16 would be emulated and int8 is what pays.)

`mixed` is the fastest of int8-compute and the float_layers rows whose accuracy is within --max-drop points of
the unpruned fp32 baseline's (the baseline is measured too, torch-cpu fp32 as the study's trial 0); `float` is the
faster of fp32 and bf16. The last line is one JSON object with `uniform_int8`, `mixed`, `float` (each: accuracy,
per_sample_ms, config), `baseline_accuracy`, every row, and the calibration rows.
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
)

CALIBRATION_IMAGES = (32, 64, 128)  # calibration sizes tried beside the whole split (256 images of an ImageFolder)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p, studies_dir="studies")
    p.add_argument("--prune-ratio", type=float, default=0.0, help="the build to quantize (default 0)")
    p.add_argument("--prune-profile", default="uniform", help="uniform | global (default uniform)")
    p.add_argument("--drop-blocks", type=int, default=0, help="blocks dropped from the build (default 0)")
    p.add_argument("--recovery", default="short", help="short | long: the build's recovery (default short)")
    p.add_argument("--placement", default="ov-cpu", help="ov-cpu | ort-cpu (default ov-cpu)")
    p.add_argument("--threads", type=int, default=1, help="threads of every row (default 1)")
    p.add_argument(
        "--int8-ops",
        default="all",
        help="comma-separated int8_ops of the float_layers rows: all, compute or both (default all)",
    )
    p.add_argument("--ks", default="1,2,4", help="comma-separated float_layers values to try (default 1,2,4)")
    p.add_argument("--max-drop", type=float, default=1.0, help="accuracy budget in points (default 1)")
    p.add_argument("--rounds", type=int, default=3, help="re-measurement rounds (default 3)")
    p.add_argument("--skip-calibration", action="store_true", help="omit the calibration method and size rows")
    args = p.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",") if k.strip()]
    args.int8_ops = [o.strip() for o in args.int8_ops.split(",") if o.strip()]
    if args.rounds < 1 or not args.ks or min(args.ks) < 1:
        p.error("--rounds >= 1 and --ks of integers >= 1 are needed")
    if not args.int8_ops or not set(args.int8_ops) <= {"all", "compute"}:
        p.error("--int8-ops takes all, compute or all,compute")
    return args


def rows(args: argparse.Namespace) -> dict[str, dict]:
    from tuner.candidate import Candidate
    from tuner.runtimes.registry import PLACEMENTS
    from tuner.study.objective import baseline_candidate

    common = {
        "placement": args.placement,
        "prune_ratio": args.prune_ratio,
        "threads": args.threads,
        "prune_profile": args.prune_profile,
        "drop_blocks": args.drop_blocks,
        "recovery": args.recovery,
    }
    out = {"baseline": baseline_candidate().to_dict(), "fp32": Candidate(precision="fp32", **common).to_dict()}
    if not PLACEMENTS[args.placement].refuse("bf16") and not PLACEMENTS[args.placement].unavailable():
        out["bf16"] = Candidate(precision="bf16", **common).to_dict()
    out["int8"] = Candidate(precision="int8", **common).to_dict()  # uniform: every op ORT quantizes, in int8
    out["int8-compute"] = Candidate(precision="int8", int8_ops="compute", **common).to_dict()
    for ops in args.int8_ops:
        for k in args.ks:
            out[_mixed_row(ops, k)] = Candidate(precision="int8", int8_ops=ops, float_layers=k, **common).to_dict()
    if not args.skip_calibration:
        for method in ("entropy", "percentile"):
            out[f"int8-{method}"] = Candidate(precision="int8", calibration=method, **common).to_dict()
        for images in CALIBRATION_IMAGES:
            out[f"int8-calib{images}"] = Candidate(precision="int8", calibration_images=images, **common).to_dict()
    return out


def _mixed_row(ops: str, k: int) -> str:
    return f"int8-k{k}" if ops == "all" else f"int8-{ops}-k{k}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import yaml

    fp = print_machine()
    print(
        f"workload: {describe_workload(args)}; prune {args.prune_ratio} {args.prune_profile}, -{args.drop_blocks} blocks, "
        f"{args.recovery} recovery, {args.placement}, {args.threads} threads"
    )
    configs = rows(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-mixed-"))
    results: dict[str, list[dict]] = {name: [] for name in configs}
    try:
        for name, params in configs.items():
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for r in range(args.rounds):
            for name in configs:
                out = measure_once(args, tmp / f"{name}.yaml")
                results[name].append(out)
                what = (
                    f"{out['per_sample_ms']:.4f} ms/sample, {out['accuracy']:.2%}, ran {out['executed_precision']}"
                    f" [{out.get('layer_precisions', '')}]"
                    if "error" not in out
                    else f"FAILED: {out['error']}"
                )
                print(f"  round {r + 1}/{args.rounds} {name:<16} {what}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    for name, runs in results.items():
        good = [x for x in runs if "error" not in x]
        summary[name] = (
            {
                "config": configs[name],
                "accuracy": median([x["accuracy"] for x in good]),
                "per_sample_ms": median([x["per_sample_ms"] for x in good]),
                "round_per_sample_ms": [x["per_sample_ms"] for x in good],
                "executed_precision": good[0]["executed_precision"],
                "layer_precisions": good[0].get("layer_precisions"),
                "float_layers": good[0].get("float_layers"),
                "calibrate_seconds": good[0].get("build_seconds", {}).get("calibrate"),
            }
            if good
            else {"config": configs[name], "error": runs[0]["error"] if runs else "not run"}
        )
    base = summary["baseline"].get("accuracy")

    def drop(s: dict) -> float | None:
        return 100 * (base - s["accuracy"]) if base is not None and s.get("accuracy") is not None else None

    print(f"\n{'row':<16} {'accuracy':>8} {'drop pt':>7} {'ms/sample':>10} {'rounds min-max':>17}  ran")
    for name, s in summary.items():
        if "error" in s:
            print(f"{name:<16} FAILED: {s['error']}")
            continue
        s["accuracy_drop_points"] = drop(s)
        spread = f"{min(s['round_per_sample_ms']):.4f}-{max(s['round_per_sample_ms']):.4f}"
        print(
            f"{name:<16} {s['accuracy']:>8.2%} {fmt(s['accuracy_drop_points'], '7.2f')} "
            f"{s['per_sample_ms']:>10.4f} {spread:>17}  {s['executed_precision']} [{s['layer_precisions']}]"
            + (f" float: {', '.join(s['float_layers'])}" if s.get("float_layers") else "")
        )
    # mixed: int8 with part of the model in float (the ops between compute layers, or the k most sensitive layers)
    mixed_rows = ["int8-compute"] + [_mixed_row(ops, k) for ops in args.int8_ops for k in args.ks]
    ok = [
        n
        for n in mixed_rows
        if summary[n].get("accuracy_drop_points") is not None
        and summary[n]["accuracy_drop_points"] <= args.max_drop + 1e-9
    ]  # 1.0000000000000009 is 1 point
    mixed = min(ok, key=lambda n: summary[n]["per_sample_ms"], default=None)
    floats = [n for n in ("fp32", "bf16") if summary.get(n, {}).get("per_sample_ms")]
    best_float = min(floats, key=lambda n: summary[n]["per_sample_ms"], default=None)
    uniform = summary["int8"]
    print(
        f"\nuniform int8: drop {fmt(uniform.get('accuracy_drop_points'), '.2f')} points"
        + (
            f" (more than the {args.max_drop:g}-point budget)"
            if (uniform.get("accuracy_drop_points") or 0) > args.max_drop + 1e-9
            else f" (within the {args.max_drop:g}-point budget: mixed precision is not needed here)"
        )
    )
    if mixed and best_float:
        m, f = summary[mixed], summary[best_float]
        print(
            f"mixed ({mixed}): drop {m['accuracy_drop_points']:.2f} points, {m['per_sample_ms']:.4f} ms/sample: "
            f"{f['per_sample_ms'] / m['per_sample_ms']:.2f}x the fastest float option ({best_float}, "
            f"{f['per_sample_ms']:.4f}), {m['per_sample_ms'] / uniform['per_sample_ms']:.2f}x uniform int8's latency"
        )
    else:
        print(f"no mixed row ({', '.join(mixed_rows)}) held accuracy within {args.max_drop:g} points")

    def pick(name: str | None) -> dict | None:
        if name is None:
            return None
        s = summary[name]
        return {
            "label": name,
            "accuracy": s.get("accuracy"),
            "per_sample_ms": s.get("per_sample_ms"),
            "config": s["config"],
            "accuracy_drop_points": s.get("accuracy_drop_points"),
            "layer_precisions": s.get("layer_precisions"),
            "float_layers": s.get("float_layers"),
        }

    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "mixed_precision",
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "prune_ratio": args.prune_ratio,
                "prune_profile": args.prune_profile,
                "drop_blocks": args.drop_blocks,
                "recovery": args.recovery,
                "placement": args.placement,
                "int8_ops": args.int8_ops,
                "threads": args.threads,
                "rounds": args.rounds,
                "max_drop": args.max_drop,
                "baseline_accuracy": base,
                "uniform_int8": pick("int8"),
                "mixed": pick(mixed),
                "float": pick(best_float),
                "rows": summary,
                "calibration": {
                    n: pick(n)
                    for n in (
                        "int8",
                        "int8-entropy",
                        "int8-percentile",
                        *(f"int8-calib{i}" for i in CALIBRATION_IMAGES),
                    )
                    if n in summary
                },
            }
        )
    )


if __name__ == "__main__":
    main()
