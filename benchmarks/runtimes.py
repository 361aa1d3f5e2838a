"""Latency of one model across CPU runtimes: torch-cpu, ort-cpu, ov-cpu, at fp32 / int8 (and bf16 where the CPU has it).

    python benchmarks/runtimes.py --model resnet18 --data digits --resolution 224 --rounds 3

The ONNX fp32 and int8 artifacts are built once, here, through the project's own pipeline
(tuner.workload.load_workload + tuner.passes.chain.build); int8 is the one calibrated QDQ file that both
ort-cpu and ov-cpu run. Each measurement then runs in its own subprocess, alternated round-robin
(A B C D E, A B C D E, ...), because runtimes keep spinning thread pools that distort each other in
one process, and because alternation spreads slow phases of a shared machine over every row.

Per row: the median of the round medians, the min-max of the round medians, the 95% CI and sample
count of the median round, and the executed precision read back from the runtime. Batch 1 by default.
Without --weights the model is untrained (--train-steps 0): latency does not depend on the weights'
values, and int8 calibration still runs on real images.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (placement, precision) in round-robin order; bf16 rows are kept only where the placement accepts them here.
ROWS = [
    ("torch-cpu", "fp32"),
    ("ort-cpu", "fp32"),
    ("ort-cpu", "int8"),
    ("ov-cpu", "fp32"),
    ("ov-cpu", "int8"),
    ("torch-cpu", "bf16"),
    ("ov-cpu", "bf16"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--data", default="digits")
    p.add_argument("--weights", default=None, help="a state_dict; without it: see --train-steps")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument(
        "--train-steps",
        type=int,
        default=0,
        help="baseline training steps when no --weights (default 0: latency needs no trained weights)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads per runtime (0 = every core)")
    p.add_argument(
        "--fold-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fold BatchNorm before export (all runtimes then get the same graph)",
    )
    p.add_argument("--seconds", type=float, default=3.0, help="timing budget per measurement (warm-up excluded)")
    p.add_argument("--cache-dir", default=str(ROOT / "studies" / "cache"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: one measurement, JSON on stdout
    return p.parse_args(argv)


# ---------------------------------------------------------------- child: one measurement in a fresh process


def child(job: dict) -> None:
    import numpy as np
    import torch

    from tuner.measure.latency import LatencyPolicy, time_calls
    from tuner.runtimes.registry import PLACEMENTS

    model = None
    if job["torch"]:  # the same architecture rebuilt, then the built weights loaded (fx modules do not pickle)
        from tuner.models import create_model
        from tuner.passes.fuse import fold_bn
        from tuner.passes.quantize import cast_torch

        spec = job["torch"]
        model = create_model(spec["model"], spec["num_classes"]).eval()
        if spec["fold_bn"]:
            model = fold_bn(model)
        model.load_state_dict(torch.load(spec["state"], map_location="cpu", weights_only=True))
        model = cast_torch(model, job["precision"])
    onnx_path = Path(job["onnx"]) if job["onnx"] else None
    x = np.load(job["example"])
    start = time.perf_counter()
    session = PLACEMENTS[job["placement"]].open(model, onnx_path, job["precision"], "all", job["threads"])
    try:
        prepared = session.prepare(x)
        open_s = time.perf_counter() - start
        lat = time_calls(session.run, prepared, LatencyPolicy(max_seconds=job["seconds"]), threads=job["threads"])
        executed = session.executed_precision
    finally:
        session.close()
    print(
        json.dumps(
            {
                "median_ms": lat.median_ms,
                "ci_ms": [lat.ci_low_ms, lat.ci_high_ms],
                "p95_ms": lat.p95_ms,
                "samples": lat.samples,
                "executed": executed,
                "open_s": open_s,
            }
        )
    )


# ---------------------------------------------------------------- parent: build once, then alternate children


def build_artifacts(
    args: argparse.Namespace, tmp: Path, rows: list[tuple[str, str]], threads: int
) -> dict[tuple[str, str], dict]:
    import numpy as np
    import torch

    from tuner import logs
    from tuner.candidate import Candidate
    from tuner.passes.chain import build
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    spec = WorkloadSpec(
        model=args.model,
        data=args.data,
        weights=args.weights,
        resolution=args.resolution,
        train_steps=args.train_steps,
        cache_dir=args.cache_dir,
    )
    with logs.to(lambda m: print(f"  {m}", flush=True)):
        w = load_workload(spec)
    example = tmp / "example.npy"
    np.save(example, w.data.example(args.batch_size))  # real validation images
    jobs = {}
    for placement, precision in rows:
        c = Candidate(
            precision=precision,
            placement=placement,
            fold_bn=args.fold_bn,
            batch_size=args.batch_size,
            threads=args.threads,
        )
        start = time.perf_counter()
        built = build(w, c)
        torch_spec = None
        if built.model is not None:  # torch placements: the built weights, handed over as a file
            state = tmp / f"{placement}-{precision}.pt"
            torch.save(built.model.state_dict(), state)
            torch_spec = {
                "model": args.model,
                "num_classes": w.data.num_classes,
                "fold_bn": args.fold_bn,
                "state": str(state),
            }
        print(
            f"  built {placement} {precision}: {built.onnx_path or 'torch module'} "
            f"({built.artifact_mb:.1f} MB, {time.perf_counter() - start:.1f} s)",
            flush=True,
        )
        jobs[(placement, precision)] = {
            "placement": placement,
            "precision": precision,
            "onnx": str(built.onnx_path or ""),
            "torch": torch_spec,
            "example": str(example),
            "threads": threads,
            "seconds": args.seconds,
            "artifact_mb": built.artifact_mb,
            "macs": built.macs,
        }
    return jobs


def run_child(job: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True, env=env, timeout=600
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(rounds: list[dict]) -> dict:
    import numpy as np

    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"error": rounds[0]["error"] if rounds else "no rounds"}
    medians = [r["median_ms"] for r in good]
    center = float(np.median(medians))
    mid = min(good, key=lambda r: abs(r["median_ms"] - center))  # the median round
    executed = sorted({r["executed"] for r in good})
    return {
        "median_ms": center,
        "min_ms": min(medians),
        "max_ms": max(medians),
        "round_medians_ms": medians,
        "ci_ms": mid["ci_ms"],
        "samples": mid["samples"],
        "executed": executed[0] if len(executed) == 1 else "/".join(executed),
        "rounds": len(good),
        "failed_rounds": len(rounds) - len(good),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return

    from tuner import hardware
    from tuner.measure import resolve_threads
    from tuner.runtimes.registry import PLACEMENTS

    fp = hardware.fingerprint()
    threads = resolve_threads(args.threads)
    print(f"machine: {fp['cpu']} | {fp['cores']} cores | ISA {' '.join(fp['isa'])} | python {fp['python']}")
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in fp["libraries"].items()))
    print(
        f"workload: {args.model} on {args.data} at {args.resolution} px, batch {args.batch_size}, {threads} threads, "
        f"fold_bn {args.fold_bn}, {args.rounds} rounds x {args.seconds:g} s per measurement"
    )
    if not args.weights:
        print(
            f"weights: none given, baseline trained {args.train_steps} steps "
            f"({'untrained: ' if args.train_steps == 0 else ''}latency does not depend on the weights' values; "
            "int8 calibration still uses real images; accuracy is not reported)"
        )

    rows, skipped = [], {}
    for placement, precision in ROWS:
        p = PLACEMENTS[placement]
        reason = p.unavailable() or p.refuse(precision)
        if reason:
            skipped[f"{placement} {precision}"] = reason
        else:
            rows.append((placement, precision))
    tmp = Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
    try:
        print("building (once, cached under --cache-dir):", flush=True)
        jobs = build_artifacts(args, tmp, rows, threads)
        results: dict[tuple[str, str], list[dict]] = {row: [] for row in rows}
        for r in range(args.rounds):
            for row in rows:
                out = run_child(jobs[row])
                results[row].append(out)
                figure = (
                    f"{out['median_ms']:.2f} ms ({out['samples']} samples)"
                    if "error" not in out
                    else f"FAILED: {out['error']}"
                )
                print(f"  round {r + 1}/{args.rounds} {row[0]:<9} {row[1]:<4} {figure}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {
        f"{p} {x}": {**summarize(results[(p, x)]), "artifact_mb": round(jobs[(p, x)]["artifact_mb"], 2)}
        for p, x in rows
    }
    base = summary.get("torch-cpu fp32", {}).get("median_ms")
    print()
    header = (
        f"{'runtime':<10} {'prec':<5} {'median ms':>9} {'min-max of rounds':>18} {'95% CI (median round)':>22} "
        f"{'n':>5} {'executed':>8} {'vs torch':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, s in summary.items():
        placement, precision = name.split()
        if "error" in s:
            print(f"{placement:<10} {precision:<5} FAILED: {s['error']}")
            continue
        speedup = f"{base / s['median_ms']:.2f}x" if base else "-"
        print(
            f"{placement:<10} {precision:<5} {s['median_ms']:>9.2f} {s['min_ms']:>8.2f} - {s['max_ms']:<7.2f} "
            f"{s['ci_ms'][0]:>10.2f} - {s['ci_ms'][1]:<9.2f} {s['samples']:>5} {s['executed']:>8} {speedup:>8}"
        )
    for name, reason in skipped.items():
        print(f"{name:<16} skipped: {reason}")
    print(
        "(per batch; each figure is one process per round, rounds alternated; the CPU may be shared, so figures "
        "are indicative)"
    )
    print(
        json.dumps(
            {
                "machine": fp,
                "fingerprint_id": hardware.fingerprint_id(fp),
                "model": args.model,
                "data": args.data,
                "resolution": args.resolution,
                "batch_size": args.batch_size,
                "threads": threads,
                "fold_bn": args.fold_bn,
                "rounds": args.rounds,
                "weights": args.weights or f"trained {args.train_steps} steps",
                "results": summary,
                "skipped": skipped,
            }
        )
    )


if __name__ == "__main__":
    main()
