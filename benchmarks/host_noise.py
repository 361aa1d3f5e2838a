"""How often is each CPU of this machine slowed by other tenants? The figure behind tuner/measure/host.py.

A fixed pure-Python loop runs on every CPU at once (one process pinned to each, so every CPU stays busy), timed
in short windows; a window more than 1.35x slower than the fastest window seen counts as contended (the same
threshold as tuner.measure.host.SLOW). Prints per CPU the fastest / median window and the contended share, the
share of windows with every CPU at full speed, then one JSON line.

    python benchmarks/host_noise.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine_json, print_machine

from tuner.measure.host import SLOW

LOOPS = 20000  # ~1 ms at full speed


def trace(cpu: int, seconds: float, window: float, out: multiprocessing.Queue) -> None:
    os.sched_setaffinity(0, {cpu})
    windows = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        stop, runs = time.perf_counter() + window, []
        while time.perf_counter() < stop:
            t0, x = time.perf_counter_ns(), 0
            for i in range(LOOPS):
                x += i * i
            runs.append((time.perf_counter_ns() - t0) / 1e6)
        windows.append(statistics.median(runs))
    out.put((cpu, windows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--window", type=float, default=0.25, help="seconds per window (default 0.25)")
    args = p.parse_args()
    fp = print_machine()
    cpus = sorted(os.sched_getaffinity(0))
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=trace, args=(c, args.seconds, args.window, queue)) for c in cpus]
    for proc in procs:
        proc.start()
    traces = dict(queue.get() for _ in procs)
    for proc in procs:
        proc.join()
    fastest = min(min(w) for w in traces.values())
    n = min(len(w) for w in traces.values())
    per_cpu = {}
    for cpu in cpus:
        w = traces[cpu]
        per_cpu[cpu] = {
            "fastest_ms": min(w),
            "median_ms": statistics.median(w),
            "contended_share": sum(x > SLOW * fastest for x in w) / len(w),
        }
        print(
            f"cpu {cpu}: fastest {min(w):.3f} ms, median {statistics.median(w):.3f} ms, "
            f"contended {100 * per_cpu[cpu]['contended_share']:.0f}% of {len(w)} windows"
        )
    all_quiet = sum(all(traces[c][i] <= SLOW * fastest for c in cpus) for i in range(n)) / n
    print(f"every CPU at full speed in {100 * all_quiet:.0f}% of windows")
    print(
        json.dumps(
            {
                **machine_json(fp),
                "benchmark": "host_noise",
                "seconds": args.seconds,
                "window_s": args.window,
                "per_cpu": per_cpu,
                "all_quiet_share": all_quiet,
            }
        )
    )


if __name__ == "__main__":
    main()
