"""`tuner explain`: per-layer time of a trial against another, from each runtime's profiler."""

from __future__ import annotations

import argparse

from tuner.cli.arguments import Command, add_study_args
from tuner.defaults import DEFAULTS
from tuner.errors import check_number


class Explain(Command):
    """Why a trial is fast or slow: per-layer time of the pick (or --trial) against the baseline (or --against),
    from each runtime's own profiler, with findings in words."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_study_args(parser)
        parser.add_argument(
            "--trial", type=int, help="the trial to explain (default: the study's pick, the fastest feasible)"
        )
        parser.add_argument("--against", type=int, help="the trial to hold it against (default: the baseline)")
        parser.add_argument(
            "--repeats", type=int, default=DEFAULTS.repeats, help="profiled calls per build (median per layer)"
        )
        parser.add_argument("--top", type=int, default=5, help="how many of the costliest layers to list")
        parser.add_argument("--json", action="store_true", help="print the comparison as JSON")

    def run(self, args: argparse.Namespace) -> int:
        import json

        from tuner.explain.compare import render
        from tuner.explain.trials import explain_study
        from tuner.study.storage import load_existing_study

        check_number("--trial", args.trial, 0)
        check_number("--against", args.against, 0)
        check_number("--repeats", args.repeats, 1)
        check_number("--top", args.top, 1)
        study = load_existing_study(args.study, args.storage, args.studies_dir)
        done = explain_study(study, args.trial, args.against, args.studies_dir, args.repeats)
        print(json.dumps(done.to_dict(), indent=1) if args.json else render(done, args.top))
        return 0
