"""Shared bits of the benchmark scripts: the workload arguments (as the CLI takes them), the machine line,
running ``python -m tuner`` in a subprocess, and small statistics helpers. Not a benchmark itself."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TINY = f"{ROOT / 'tests' / 'tiny_models.py'}:conv_net"  # the tests' small CNN: cheap to build and measure


def add_workload_args(
    p: argparse.ArgumentParser,
    model: str = "resnet18",
    resolution: int | None = None,
    studies_dir: str | None = "studies",
) -> None:
    """--model --data --weights --resolution --train-steps --recover-steps --studies-dir --seed, as `tuner` has them."""
    g = p.add_argument_group("workload (as for `python -m tuner`)")
    g.add_argument(
        "--model",
        default=model,
        help=f"resnet18|..., a torchvision/timm name, or module:callable / file.py:callable (default {model})",
    )
    g.add_argument("--data", default="digits", help="'digits' (built in, offline) or an ImageFolder directory")
    g.add_argument("--weights", default=None, help="a state_dict file; without it a baseline is trained (cached)")
    g.add_argument(
        "--resolution",
        type=int,
        default=resolution,
        help="input size in pixels (default: " + (f"{resolution})" if resolution else "the data's default)"),
    )
    g.add_argument("--train-steps", type=int, default=None, help="baseline training steps when no --weights")
    g.add_argument("--recover-steps", type=int, default=None, help="short recovery budget in steps (see tuner)")
    g.add_argument(
        "--studies-dir",
        default=studies_dir,
        help="where studies and the build cache live" + (f" (default {studies_dir})" if studies_dir else ""),
    )
    g.add_argument("--seed", type=int, default=0, help="data split, baseline training and sampler seed")
    g.add_argument("--holdout", type=float, default=None, help="share of validation images kept from the search")


def workload_cli_args(args: argparse.Namespace, studies_dir: str | None = None) -> list[str]:
    """The same workload as `python -m tuner` / `tuner measure` arguments."""
    out = [
        "--model",
        args.model,
        "--data",
        args.data,
        "--seed",
        str(args.seed),
        "--studies-dir",
        str(studies_dir or args.studies_dir),
    ]
    for flag, value in (
        ("--weights", args.weights),
        ("--resolution", args.resolution),
        ("--train-steps", args.train_steps),
        ("--recover-steps", args.recover_steps),
        ("--holdout", args.holdout),
    ):
        if value is not None:
            out += [flag, str(value)]
    return out


def workload_spec(args: argparse.Namespace) -> Any:
    """The WorkloadSpec the CLI would build from these arguments (tuner.cli.arguments.workload_spec)."""
    from tuner.workload_spec import WorkloadSpec

    d = WorkloadSpec()
    return WorkloadSpec(
        model=args.model,
        data=args.data,
        weights=args.weights,
        resolution=args.resolution,
        seed=args.seed,
        train_steps=d.train_steps if args.train_steps is None else args.train_steps,
        recover_steps=d.recover_steps if args.recover_steps is None else args.recover_steps,
        holdout=d.holdout if args.holdout is None else args.holdout,
        cache_dir=f"{args.studies_dir}/cache",
    )


def describe_workload(args: argparse.Namespace) -> str:
    from tuner.data import DEFAULT_RESOLUTION
    from tuner.workload_spec import WorkloadSpec

    d = WorkloadSpec()
    res = args.resolution or DEFAULT_RESOLUTION.get(args.data, 224)
    weights = args.weights or (
        f"baseline trained {d.train_steps if args.train_steps is None else args.train_steps} steps"
    )
    recover = d.recover_steps if args.recover_steps is None else args.recover_steps
    return f"{args.model} on {args.data} at {res} px, weights: {weights}, recover {recover} steps, seed {args.seed}"


def print_machine() -> dict[str, Any]:
    """Print the machine (as benchmarks/runtimes.py does) and return its fingerprint."""
    from tuner import hardware

    fp = hardware.fingerprint()
    cap = f" (oneDNN capped at {fp['onednn_isa_cap']})" if fp.get("onednn_isa_cap") else ""
    print(
        f"machine: {fp['cpu']} | {fp['cores']} cores | ISA {' '.join(fp['isa']) or '-'}{cap} | "
        f"gpu {fp['gpu'] or 'none'} | python {fp['python']} | fingerprint {hardware.fingerprint_id(fp)}"
    )
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in fp["libraries"].items()))
    try:
        load = os.getloadavg()
        print(
            f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (a shared machine makes "
            "latencies indicative only)"
        )
    except OSError:
        pass
    return fp


def machine_json(fp: dict[str, Any]) -> dict[str, Any]:
    from tuner import hardware

    return {"machine": fp, "fingerprint_id": hardware.fingerprint_id(fp)}


def tuner_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def run_tuner(argv: Sequence[str], timeout: float | None = None, quiet: bool = False) -> tuple[dict[str, Any], float]:
    """Run ``python -m tuner ARGV`` (which must include --json); return (its JSON, wall seconds).

    Its stderr (progress) goes to ours unless ``quiet``; a non-zero exit raises SystemExit with its last lines."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        env=tuner_env(),
        timeout=timeout,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = " | ".join(((proc.stderr or "") + proc.stdout).strip().splitlines()[-3:])
        raise SystemExit(f"`python -m tuner {' '.join(argv)}` failed (exit {proc.returncode}): {tail}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"`python -m tuner {' '.join(argv)}` printed no JSON: {proc.stdout[-300:]}")
    return json.loads(lines[-1]), wall


def measure_once(args: argparse.Namespace, config: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """One `tuner measure --json` of a config file in a fresh process (``extra``: more flags, e.g. --load);
    {"error": ...} when it fails."""
    cmd = [
        sys.executable,
        "-m",
        "tuner",
        "measure",
        *workload_cli_args(args),
        "--config",
        str(config),
        "--json",
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tuner_env(), timeout=1200)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
        return {"error": tail or f"exit {proc.returncode}"}
    return json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])


def measure_config(args: argparse.Namespace, params: dict[str, Any], **workload: Any) -> dict[str, Any]:
    """`measure_once` of one candidate given as a dict, with workload flags overridden (recover_steps=0, ...)."""
    import tempfile

    import yaml

    run = argparse.Namespace(**{**vars(args), **workload})
    with tempfile.TemporaryDirectory(prefix="bench-config-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(params))
        return measure_once(run, config)


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else None


def fmt(value: float | None, spec: str = ".3f", none: str = "-") -> str:
    return none if value is None else format(value, spec)
