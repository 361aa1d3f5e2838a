"""`tuner measure`: build one configuration and measure it."""

from __future__ import annotations

import argparse
import json

from tuner.cli.arguments import Command, add_workload_args, workload_keywords
from tuner.defaults import DEFAULTS


class Measure(Command):
    """Build one configuration (a YAML file of candidate keys) and measure it."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_workload_args(parser)
        parser.add_argument(
            "--config", required=True, help="YAML file with candidate keys (prune_ratio, precision, ...)"
        )
        parser.add_argument(
            "--load",
            action="store_true",
            help="measure it under load too: the closed loop at its "
            "requests in flight, then Poisson arrivals at --utilisation of the rate it answered",
        )
        parser.add_argument(
            "--utilisation",
            type=float,
            default=DEFAULTS.utilisation,
            metavar="SHARE",
            help=f"--load: default {DEFAULTS.utilisation}",
        )
        parser.add_argument("--rate", type=float, metavar="PER_SECOND", help="--load: arrivals per second instead")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        from tuner.api.measuring import measure_config

        done = measure_config.__wrapped__(  # unwrapped from in_keywords: its errors name the command line's flags
            args.config,
            args.model,
            args.data,
            **workload_keywords(args),
            load=args.load,
            utilisation=args.utilisation,
            rate=args.rate,
        )
        candidate, metrics, held_out = done.candidate, done.metrics, done.holdout_accuracy
        if args.json:
            print(json.dumps(done.to_dict()))
        else:
            lo, hi = metrics.latency_ci_ms
            print(
                f"{candidate}\n"
                f"accuracy       {metrics.accuracy:.2%} ({done.validation_images} validation images)"
                + (f", {held_out:.2%} on {done.holdout_images} held-out ones\n" if held_out is not None else "\n")
                + f"latency        {metrics.latency_ms:.3f} ms per batch of {candidate.batch_size} "
                f"(95% CI {lo:.3f}-{hi:.3f}, p95 {metrics.latency_p95_ms:.3f}, n={metrics.samples})\n"
                f"per sample     {metrics.per_sample_ms:.3f} ms, {metrics.throughput:.0f} samples/s\n"
                f"model          {metrics.params:,} params, {metrics.macs:,} MACs, {metrics.size_mb:.2f} MB, "
                f"executed {metrics.executed_precision}, {metrics.threads} threads"
                + (f" x {metrics.streams} streams" if metrics.streams > 1 else "")
            )
            if metrics.load:
                from tuner.summary import format_load

                print(format_load(metrics.load, candidate.batch_size))
        return 0
