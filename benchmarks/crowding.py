"""What a neighbour's threads do to a multi-threaded model's latency, and whether the tuner's timing says so.

A CPU shared by time slices is not a slower CPU: the host's canary (one scalar loop per CPU) runs at full speed
beside another process, yet a 2-thread model waits a time slice in every parallel region for its descheduled
thread. This runs a model on ``--threads`` torch threads in this process, beside each neighbour in turn (nothing;
a one-thread Python busy loop; a ``--threads``-thread torch matmul loop, each its own process), and prints:

* raw: the median ms per call of plain back-to-back calls for ``--seconds``, the figure a naive timer reports;
* tuner: ``tuner.measure.latency.time_calls`` on the same calls, its median, its share of contended blocks and
  whether it called the host quiet. Beside a neighbour that shares the model's CPUs it must not say quiet.

Neighbours alternate across ``--rounds``; medians over rounds are printed, then one JSON line.

    python benchmarks/crowding.py                       # the tests' small CNN at 16 px, 2 threads
    python benchmarks/crowding.py --model resnet18 --resolution 32
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine_json, print_machine

NEIGHBOURS = ("none", "busy loop (1 thread)", "torch matmul (N threads)")


def _busy_loop() -> None:
    while True:
        pass


def _matmul(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(256, 256)
    while True:
        a @ a


def _neighbour(kind: str, threads: int) -> multiprocessing.Process | None:
    if kind == "none":
        return None
    target, args = (_busy_loop, ()) if kind.startswith("busy") else (_matmul, (threads,))
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    proc.start()
    time.sleep(1.5)  # its interpreter (and torch) up and looping
    return proc


def _raw_ms(run, x, seconds: float) -> float:
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="conv_net", help="conv_net (the tests' small CNN) or a --model name")
    p.add_argument("--resolution", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="the model's torch threads (and the matmul's)")
    p.add_argument("--seconds", type=float, default=2.0, help="raw timing per neighbour and round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import torch

    from tests.tiny_models import conv_net
    from tuner.measure.latency import time_calls
    from tuner.models import create_model

    fp = print_machine()
    torch.set_num_threads(args.threads)
    model = (conv_net() if args.model == "conv_net" else create_model(args.model, 10)).eval()
    x = torch.randn(1, 3, args.resolution, args.resolution)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(batch)

    rows: dict[str, list[dict]] = {k: [] for k in NEIGHBOURS}
    for r in range(args.rounds):
        for kind in NEIGHBOURS if r % 2 == 0 else reversed(NEIGHBOURS):
            proc = _neighbour(kind, args.threads)
            try:
                raw = _raw_ms(run, x, args.seconds)
                stats = time_calls(run, x, threads=args.threads)
            finally:
                if proc is not None:
                    proc.kill()
                    proc.join()
            rows[kind].append(
                {"raw_ms": raw, "tuner_ms": stats.median_ms, "contended": stats.contended_share, "quiet": stats.quiet}
            )
            print(
                f"round {r + 1} {kind:26s} raw {raw:8.3f} ms  tuner {stats.median_ms:8.3f} ms  "
                f"contended {100 * stats.contended_share:3.0f}%  quiet={stats.quiet}",
                flush=True,
            )
    summary = {}
    print(f"\n{args.model} at {args.resolution} px on {args.threads} torch threads; medians of {args.rounds} rounds")
    print(f"{'neighbour':26s} {'raw ms':>9s} {'tuner ms':>9s} {'contended':>9s}  called quiet")
    for kind, runs in rows.items():
        s = {
            "raw_ms": statistics.median(x["raw_ms"] for x in runs),
            "tuner_ms": statistics.median(x["tuner_ms"] for x in runs),
            "contended": statistics.median(x["contended"] for x in runs),
            "quiet_rounds": sum(x["quiet"] for x in runs),
        }
        summary[kind] = s
        print(
            f"{kind:26s} {s['raw_ms']:9.3f} {s['tuner_ms']:9.3f} {100 * s['contended']:8.0f}%  "
            f"{s['quiet_rounds']} of {len(runs)} rounds"
        )
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "crowding",
                "model": args.model,
                "resolution": args.resolution,
                "threads": args.threads,
                "rounds": rows,
                "median": summary,
            }
        )
    )


if __name__ == "__main__":
    main()
