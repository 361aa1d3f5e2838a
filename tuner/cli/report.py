"""`tuner report`: one HTML page (and optionally a CSV) of a study, its output paths checked first."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuner.cli.arguments import Command, add_study_args
from tuner.errors import TunerError


def check_output_file(flag: str, path: Path) -> None:
    """A file to write: not a directory, and in a directory that exists (or can be made) and is writable."""
    if path.is_dir():
        example = path / ("trials.csv" if flag == "--csv" else "report.html")
        raise TunerError(f"{flag} {path} is a directory; pass a file path such as {example}.")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise TunerError(f"{flag} {path}: {parent} is a file, not a directory; pass a path in a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TunerError(f"{flag} {path}: the directory {parent} is not writable; pass a path you can write.")


class Report(Command):
    """Write one self-contained HTML page of a study: Pareto front, hypervolume, importances, trials, findings."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_study_args(parser)
        parser.add_argument("--out", help="the HTML file (default: <studies-dir>/<study>.html)")
        parser.add_argument("--csv", help="also write the trial table as CSV here")

    def run(self, args: argparse.Namespace) -> int:
        from tuner.report.writer import write_report
        from tuner.study.storage import load_existing_study

        out = Path(args.out or Path(args.studies_dir) / f"{args.study}.html")
        for flag, path in (("--out", out), ("--csv", Path(args.csv) if args.csv else None)):
            if path is not None:
                check_output_file(flag, path)
        if args.csv and Path(args.csv).resolve() == out.resolve():
            raise TunerError(f"--out and --csv are the same file {out}; give the CSV its own name.")
        study = load_existing_study(args.study, args.storage, args.studies_dir)
        info = write_report(study, out, args.csv, args.studies_dir)
        print("\n".join(f"- {f}" for f in info.findings))
        print(f"report: {out}" + (f"\ntrials: {args.csv}" if args.csv else ""))
        return 0
