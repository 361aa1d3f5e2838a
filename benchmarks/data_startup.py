"""Startup on an ImageFolder: how long a process takes to a loaded data set, how many photos it decodes, and what
memory it keeps, with a cold decoded cache and a warm one, and for a trial's process (the workload loaded and one
candidate measured on it, as tuner.worker does).

    python benchmarks/data_startup.py --data /tmp/imagenette-x10 --resolution 96
    python benchmarks/data_startup.py --data path/to/images --resolution 32 --no-trial      # quick

Each step runs in a fresh process (``--studies-dir``: a new temporary one unless given, so the first step is
cold): ``load`` is load_dataset alone, then every train image read once (an epoch) and the validation split
normalized batch by batch; ``trial`` loads the workload (the tests' small CNN, random weights: no baseline is
trained) and measures the unpruned fp32 candidate on torch-cpu. Memory from /proc: peak RSS (VmHWM) and, at the
end, the private part (RssAnon) and the file-backed part (RssFile: pages of the page cache, shared between
processes that map the same file)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, TINY, machine_json, print_machine, tuner_env

CHILD = "--child-process"  # the fresh process each step runs in


def _child(mode: str, folder: str, resolution: int, cache: str, weights: str) -> dict[str, Any]:
    """One fresh process: (mode) -> its figures as a dict."""
    r = subprocess.run(
        [sys.executable, __file__, CHILD, mode, folder, str(resolution), cache, weights],
        capture_output=True,
        text=True,
        env=tuner_env(),
    )
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _memory() -> dict[str, float]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) / 1024  # kB -> MiB
    return {
        "peak_rss_mib": fields.get("VmHWM", 0.0),
        "private_mib": fields.get("RssAnon", 0.0),
        "file_backed_mib": fields.get("RssFile", 0.0),
    }


def _run_child() -> None:
    """In the fresh process: load, touch what a trial touches, print one JSON line."""
    import numpy as np

    import tuner.images as images

    count = [0]
    if not hasattr(images, "decodes"):  # a tuner before the counter: count load_image's calls where it is bound
        import tuner.data as data_module

        inner = images.load_image

        def counted(*a: Any, **k: Any) -> Any:
            count[0] += 1
            return inner(*a, **k)

        images.load_image = data_module.load_image = counted  # type: ignore[attr-defined]
    mode, folder, resolution, cache, weights = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
    t0 = time.perf_counter()
    out: dict[str, Any] = {}
    if mode == "load":
        from tuner.data import load_dataset

        data = load_dataset(folder, resolution, cache_dir=Path(cache))
        out["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        total = 0
        for i in range(0, len(data.train), 256):  # an epoch's reads, in order: every pixel
            total += int(data.train.images[i : i + 256].sum(dtype=np.uint64))
        for x, _ in data.batches(data.val, 64):
            total += int(x.shape[0])
        out["touch_s"] = time.perf_counter() - t1
        out["images"] = len(data.train) + len(data.val) + (len(data.holdout) if data.holdout is not None else 0)
    else:
        from tuner.candidate import Candidate
        from tuner.pipeline import evaluate
        from tuner.workload import load_workload
        from tuner.workload_spec import WorkloadSpec

        spec = WorkloadSpec(model=TINY, data=folder, resolution=resolution, weights=weights, cache_dir=cache)
        workload = load_workload(spec)
        out["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        metrics = evaluate(workload, Candidate()).metrics
        out["measure_s"] = time.perf_counter() - t1
        out["accuracy"] = metrics.get("accuracy")
    out["decoded"] = getattr(images, "decodes", count[0])
    out.update(_memory())
    print(json.dumps(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", required=True, help="an ImageFolder directory")
    p.add_argument("--resolution", type=int, default=96, help="input size in pixels (default 96)")
    p.add_argument(
        "--studies-dir",
        default=None,
        help="where the cache lives (default: a new temporary directory, so the first step is cold)",
    )
    p.add_argument("--no-trial", action="store_true", help="skip the trial process (the load steps only)")
    args = p.parse_args()
    fp = print_machine()
    print(f"code: {ROOT}")
    with tempfile.TemporaryDirectory(prefix="tuner-startup-") as tmp:
        cache = str(Path(args.studies_dir or tmp) / "cache")
        weights = str(Path(tmp) / "weights.pt")
        _random_weights(args.data, weights)
        steps = [("load", "cold"), ("load", "warm")] + ([] if args.no_trial else [("trial", "warm")])
        results = []
        for mode, cache_state in steps:
            t = time.perf_counter()
            r = _child(mode, args.data, args.resolution, cache, weights)
            r.update(step=f"{mode} ({cache_state} cache)", wall_s=time.perf_counter() - t)
            results.append(r)
            print(
                f"{r['step']:<20} to a loaded data set {r['load_s']:7.2f} s, {r['decoded']:>6} photos decoded, "
                f"peak RSS {r['peak_rss_mib']:7.0f} MiB (at the end: private {r['private_mib']:.0f} MiB, "
                f"file-backed {r['file_backed_mib']:.0f} MiB), process {r['wall_s']:.1f} s",
                flush=True,
            )
    print(
        json.dumps(
            {
                "benchmark": "data_startup",
                "data": args.data,
                "resolution": args.resolution,
                "steps": results,
                **machine_json(fp),
            }
        )
    )
    return 0


def _random_weights(folder: str, path: str) -> None:
    """The tests' small CNN with random weights for the folder's classes: a trial needs weights, not good ones."""
    import torch

    from tuner import models

    root = Path(folder) / "train" if (Path(folder) / "train").is_dir() else Path(folder)
    classes = sum(1 for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    torch.manual_seed(0)
    torch.save(models.create_model(TINY, classes).state_dict(), path)


if __name__ == "__main__":
    if sys.argv[1:2] == [CHILD]:
        _run_child()
    else:
        sys.exit(main())
