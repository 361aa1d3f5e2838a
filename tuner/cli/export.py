"""`tuner export`: one study point rebuilt, re-measured and written out; SIGTERM removes a partial export."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from tuner.cli.arguments import Command, add_study_args
from tuner.defaults import DEFAULTS
from tuner.errors import TunerError, check_number


class Export(Command):
    """Rebuild one study point (by trial or budget), re-measure it, and write config.yaml + the model."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_study_args(parser)
        pick = parser.add_mutually_exclusive_group(required=True)
        pick.add_argument("--trial", type=int, help="export this trial number")
        pick.add_argument(
            "--max-drop",
            type=float,
            metavar="POINTS",
            help="the fastest feasible trial losing at most this many accuracy points",
        )
        pick.add_argument(
            "--max-latency-ms",
            type=float,
            metavar="MS",
            help="the most accurate feasible trial at or under this per-sample latency",
        )
        parser.add_argument("--out", required=True, help="directory to write (new, empty, or a previous export)")
        parser.add_argument(
            "--torch-format",
            default=DEFAULTS.torch_format,
            choices=("export", "state_dict"),
            help="torch placements: a torch.export program (falls back to state_dict) or a state_dict",
        )

    def run(self, args: argparse.Namespace) -> int:
        from tuner.artifact import check_out, export, select_trial
        from tuner.metric import check_drop_budget
        from tuner.names import CONFIG_FILE
        from tuner.study.storage import load_existing_study

        signal.signal(signal.SIGTERM, _exit_on_sigterm)  # a terminated export removes its partial directory

        check_number("--trial", args.trial, 0)
        if args.max_drop is not None:
            check_drop_budget(args.max_drop, "--max-drop")
        check_number("--max-latency-ms", args.max_latency_ms, 0, above=True, why=" ms per sample")
        parent = next((p for p in Path(args.out).parents if p.exists()), Path("."))
        if not parent.is_dir():
            raise TunerError(f"--out {args.out}: {parent} is a file, not a directory; pass a directory path.")
        check_out(Path(args.out))
        study = load_existing_study(args.study, args.storage, args.studies_dir)
        trial, why = select_trial(study, args.trial, args.max_drop, args.max_latency_ms)
        done = export(study, trial, why, args.out, args.studies_dir, args.storage, args.torch_format)
        m = done.config["metrics"]["export"]
        print(
            f"exported trial #{done.trial} ({why}) to {done.out}: {done.artifact} ({done.kind}), {CONFIG_FILE}\n"
            f"re-measured: {m['accuracy']:.2%}, {m['per_sample_ms']:.4f} ms/sample "
            f"(study: {done.config['metrics']['study']['per_sample_ms']:.4f}); check it with "
            f"`tuner verify {done.out}`"
        )
        return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like an exit (whatever is half written is removed on the way out), with the shell's code."""
    raise SystemExit(128 + signum)
