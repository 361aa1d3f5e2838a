"""Which channel multiple runs fastest here: one pruned architecture with its kept channel counts rounded to
1 (exact), 8, 16, 32 and 64, each exported, quantized (int8 QDQ) and timed in OpenVINO int8 and bf16 (and ORT
int8), every file in its own fresh process, rows alternated over --rounds.

    python benchmarks/channel_rounding.py --resolution 128 --ratio 0.4 --rounds 3

The weights do not change the speed of a dense kernel, so the model is the freshly built architecture (seeded),
calibrated on the data set's calibration images. The last line is one JSON object: per multiple, MACs and the
median ms per runtime, and the machine (its ISA decides which multiple the kernels like).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_workload_args, machine_json, median, print_machine, tuner_env, workload_spec

RUNS = (("ov-cpu", "int8"), ("ov-cpu", "bf16"), ("ort-cpu", "int8"))


def _time_one(path: str, placement: str, precision: str, threads: int, resolution: int) -> None:
    """Child side: open the file in its runtime and time batch-1 calls on a real-sized input."""
    import numpy as np

    from tuner.measure.latency import time_calls
    from tuner.runtimes.registry import PLACEMENTS

    session = PLACEMENTS[placement].open(None, Path(path), precision, "all", threads)
    x = session.prepare(np.random.default_rng(0).standard_normal((1, 3, resolution, resolution)).astype(np.float32))
    for _ in range(20):
        session.run(x)
    lat = time_calls(session.run, x, threads=threads)
    print(
        json.dumps(
            {"median_ms": lat.median_ms, "ci": [lat.ci_low_ms, lat.ci_high_ms], "executed": session.executed_precision}
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_workload_args(p)
    p.add_argument("--ratio", type=float, default=0.4, help="uniform prune ratio (default 0.4)")
    p.add_argument("--multiples", default="1,8,16,32,64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time", nargs=4, metavar=("FILE", "PLACEMENT", "PRECISION", "RESOLUTION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time:
        _time_one(args.time[0], args.time[1], args.time[2], args.threads, int(args.time[3]))
        return
    fp = print_machine()
    import torch

    from tuner import hardware
    from tuner.data import load_dataset
    from tuner.models import create_model
    from tuner.passes.onnx_export import export_onnx
    from tuner.passes.prune import count, prune
    from tuner.passes.qdq import quantize_int8

    spec = workload_spec(args)
    data = load_dataset(spec.data, spec.resolution, spec.mean, spec.std, spec.seed, Path(spec.cache_dir))
    example = torch.from_numpy(data.example(1))
    tmp = Path(tempfile.mkdtemp(prefix="bench-rounding-"))
    files, macs = {}, {}
    for k in [int(m) for m in args.multiples.split(",")]:
        torch.manual_seed(spec.seed)
        model = create_model(spec.model, data.num_classes).eval()
        prune(model, args.ratio, example, round_to=k)
        macs[k] = count(model, example)[0]
        fp32 = export_onnx(model, example, tmp / f"r{k}.onnx")
        files[k] = {
            "fp32": fp32,
            "int8": quantize_int8(fp32, data, tmp / f"r{k}-int8.onnx", not hardware.has_cpu_vnni()),
        }
        print(f"multiple {k:>2}: {macs[k]:,} MACs", flush=True)
    times: dict[tuple[int, str, str], list[float]] = {}
    for r in range(args.rounds):
        for k in files:
            for placement, precision in RUNS:
                path = files[k]["int8" if precision == "int8" else "fp32"]
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--threads",
                        str(args.threads),
                        "--time",
                        str(path),
                        placement,
                        precision,
                        str(data.resolution),
                    ],
                    capture_output=True,
                    text=True,
                    env=tuner_env(),
                    timeout=600,
                )
                line = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                if out.returncode or not line:
                    print(f"  round {r + 1} x{k} {placement} {precision} FAILED: {out.stderr.strip()[-200:]}")
                    continue
                times.setdefault((k, placement, precision), []).append(json.loads(line[-1])["median_ms"])
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n{'multiple':>8} {'MACs':>13} " + " ".join(f"{pl + ' ' + pr:>14}" for pl, pr in RUNS) + "   (median ms)")
    rows = []
    for k in files:
        meds = {f"{pl} {pr}": median(times.get((k, pl, pr), [])) for pl, pr in RUNS}
        rows.append(
            {
                "multiple": k,
                "macs": macs[k],
                "median_ms": meds,
                "rounds_ms": {f"{pl} {pr}": times.get((k, pl, pr), []) for pl, pr in RUNS},
            }
        )
        print(f"{k:>8} {macs[k]:>13,} " + " ".join(f"{v if v is None else round(v, 4):>14}" for v in meds.values()))
    best = {
        f"{pl} {pr}": min(rows, key=lambda row: row["median_ms"][f"{pl} {pr}"] or float("inf"))["multiple"]
        for pl, pr in RUNS
    }
    print("fastest multiple: " + ", ".join(f"{k}: {v}" for k, v in best.items()))
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "channel_rounding",
                "model": args.model,
                "data": args.data,
                "resolution": data.resolution,
                "ratio": args.ratio,
                "threads": args.threads,
                "rounds": args.rounds,
                "rows": rows,
                "fastest": best,
            }
        )
    )


if __name__ == "__main__":
    main()
