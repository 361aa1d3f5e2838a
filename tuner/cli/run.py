"""`tuner run` (the default command): search or resume a study and print its Pareto front."""

from __future__ import annotations

import argparse
import json

from tuner.cli.arguments import Command, add_workload_args, workload_keywords
from tuner.defaults import DEFAULTS


class Run(Command):
    """Search (or resume) a study and print its Pareto front (the default command)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_workload_args(parser)
        g = parser.add_argument_group("study")
        g.add_argument("--space", default=DEFAULTS.space, help="search space: a name in search_spaces/ or a YAML path")
        g.add_argument("--objectives", default=DEFAULTS.objectives, help="a name in objectives/ or a YAML path")
        g.add_argument(
            "--study",
            help="study name (default: model-data-resolution-hardware, then a hash of "
            "the model's and data's full paths where they are files)",
        )
        g.add_argument("--storage", help="any Optuna storage URL (default: sqlite under --studies-dir)")
        g.add_argument("--sampler", default=DEFAULTS.sampler, help="tpe | nsga2 | gp | random")
        g.add_argument(
            "--budget",
            metavar="TIME",
            help="the time the whole run may take, the re-measure included: 90s, 20m, 1.5h; the study plans "
            "its trials (and which get a recovery) to end within it",
        )
        g.add_argument(
            "--n-trials",
            type=int,
            default=None,
            help="total trials in the study, baseline included (default 20; with --budget: no cap)",
        )
        g.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
        g.add_argument(
            "--heartbeat",
            type=float,
            default=DEFAULTS.heartbeat,
            help="seconds between a running trial's heartbeats; 3 missed ones mark its worker dead",
        )
        g.add_argument(
            "--max-retries",
            type=int,
            default=DEFAULTS.max_retries,
            help="re-runs of a trial whose worker died or crashed",
        )
        g.add_argument(
            "--trial-timeout",
            type=float,
            metavar="SECONDS",
            help="stop a trial (and fail it) after this long; default: 30x the setup time, at least 900 s",
        )
        g.add_argument(
            "--remeasure-rounds",
            type=int,
            default=DEFAULTS.remeasure_rounds,
            help="when the study is complete, re-time the Pareto set in fresh processes, interleaved, "
            "this many rounds (0: skip)",
        )
        g.add_argument(
            "--corruptions",
            action="store_true",
            default=DEFAULTS.corruptions,
            help="score every trial on a corruption set of the validation images too (noise, blur, JPEG, "
            "contrast, a resize mismatch; made once, cached): corruption_drop in the table; implied "
            "by objectives that use it; needs kornia (pip install 'tuner[robust]')",
        )
        g.add_argument(
            "--allow-mixed-hardware",
            action="store_true",
            help="join a study started on other hardware (its latencies are then not comparable)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        from tuner import summary
        from tuner.api.tuning import tune
        from tuner.study.storage import mask_url

        tune = tune.__wrapped__  # unwrapped from in_keywords: its errors name the command line's flags
        result = tune(
            args.model,
            args.data,
            **workload_keywords(args),
            space=args.space,
            objectives=args.objectives,
            n_trials=args.n_trials,
            budget=args.budget,
            study=args.study,
            storage=args.storage,
            sampler=args.sampler,
            timeout=args.timeout,
            heartbeat=args.heartbeat,
            max_retries=args.max_retries,
            trial_timeout=args.trial_timeout,
            remeasure_rounds=args.remeasure_rounds,
            allow_mixed_hardware=args.allow_mixed_hardware,
            corruptions=args.corruptions,
        )
        from tuner.remeasure.text import format_remeasure

        found, name, storage = result.summary(), result.study.study_name, mask_url(result.storage)
        if args.json:
            print(
                json.dumps(
                    {
                        "study": name,
                        "storage": storage,
                        **found,
                        "remeasure": result.remeasure.to_dict() if result.remeasure else None,
                    }
                )
            )
        else:
            print(summary.pareto_table(found))
            if result.remeasure:
                print("\n" + format_remeasure(result.remeasure))
            if found.get("time"):
                print("\n" + summary.time_table(found))
            print(f"\nstorage: {storage}  (optuna.load_study(study_name={name!r}, storage=...))")
        return 0
