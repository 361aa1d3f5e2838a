"""Command line: ``tuner [run] ...`` searches, ``tuner measure`` builds and measures one config.

Each command is a small class (as in optuna/cli.py). Anything the user got wrong is a
TunerError: one line on stderr, exit code 2, no traceback. Progress goes to stderr, results
to stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner import logs
from tuner.defaults import DEFAULTS
from tuner.errors import ResourceExhausted, TunerError, check_number
from tuner.streams import EXIT_RESOURCE, output_guarded

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        name = self.prog.split()[-1]
        hint = "tuner --help" if name == "tuner" else f"tuner {name} --help"
        self.exit(EXIT_USAGE, f"tuner: error: {message} (see '{hint}')\n")


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload")
    g.add_argument(
        "--model",
        default=DEFAULTS.model,
        help="resnet18|resnet34|resnet50, a torchvision/timm name, module:callable / file.py:callable, "
        "or path/to/model.onnx",
    )
    g.add_argument("--data", default=DEFAULTS.data, help="'digits' (built in, offline) or an ImageFolder directory")
    g.add_argument("--weights", help="a state_dict file (loaded with weights_only); without it a baseline is trained")
    g.add_argument(
        "--student",
        metavar="SPEC",
        help="your own smaller model to distil from --model (a --model value: a name, module:callable or "
        "file.py:callable); the space's `student` dimension tries it (default: derived students only)",
    )
    g.add_argument("--resolution", type=int, help="input size in pixels (default: digits 32, ImageFolder 224)")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="normalization mean (0..1)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalization std (0..1)")
    g.add_argument("--seed", type=int, default=DEFAULTS.seed, help="data split, training and sampler seed")
    g.add_argument(
        "--holdout",
        type=float,
        default=None,
        metavar="FRACTION",
        help="share of each class's validation images the search never sees; export scores its pick on "
        "them (default 0.2; 0: none; a test/ folder beside train/ and val/ is used instead)",
    )
    g.add_argument("--train-steps", type=int, default=None, help="baseline training steps when no --weights")
    g.add_argument(
        "--recover-steps",
        type=int,
        default=None,
        help="short recovery budget: distillation steps (batch 64) for a model with half its compute "
        "removed, in proportion for more or less, at most 3 passes over the train split; it stops "
        "sooner when it stops improving (default 100; the long recovery is 4x)",
    )
    g.add_argument("--studies-dir", default=DEFAULTS.studies_dir, help="where studies, caches and artifacts live")


def workload_spec(args: argparse.Namespace) -> Any:
    from tuner.workload import make_spec

    return make_spec(
        args.model,
        args.data,
        args.weights,
        args.resolution,
        args.mean,
        args.std,
        args.seed,
        train_steps=args.train_steps,
        recover_steps=args.recover_steps,
        holdout=args.holdout,
        student=args.student,
        studies_dir=args.studies_dir,
    )


class Command:
    """One subcommand: its docstring is the help, ``run`` returns the exit code."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


class Measure(Command):
    """Build one configuration (a YAML file of candidate keys) and measure it."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_workload_args(parser)
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
            weights=args.weights,
            student=args.student,
            resolution=args.resolution,
            mean=args.mean,
            std=args.std,
            seed=args.seed,
            holdout=args.holdout,
            train_steps=args.train_steps,
            recover_steps=args.recover_steps,
            studies_dir=args.studies_dir,
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


class Run(Command):
    """Search (or resume) a study and print its Pareto front (the default command)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_workload_args(parser)
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
            weights=args.weights,
            resolution=args.resolution,
            mean=args.mean,
            std=args.std,
            seed=args.seed,
            holdout=args.holdout,
            train_steps=args.train_steps,
            recover_steps=args.recover_steps,
            student=args.student,
            space=args.space,
            objectives=args.objectives,
            n_trials=args.n_trials,
            budget=args.budget,
            study=args.study,
            storage=args.storage,
            studies_dir=args.studies_dir,
            sampler=args.sampler,
            timeout=args.timeout,
            heartbeat=args.heartbeat,
            max_retries=args.max_retries,
            trial_timeout=args.trial_timeout,
            remeasure_rounds=args.remeasure_rounds,
            allow_mixed_hardware=args.allow_mixed_hardware,
            corruptions=args.corruptions,
        )
        from tuner.remeasure.orchestrate import format_remeasure  # loads torch: after the study

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


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study name `tuner run` printed")
    parser.add_argument("--storage", help="its Optuna storage URL (default: sqlite under --studies-dir)")
    parser.add_argument("--studies-dir", default=DEFAULTS.studies_dir, help="where studies, caches and artifacts live")


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
        _add_study_args(parser)
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


class Export(Command):
    """Rebuild one study point (by trial or budget), re-measure it, and write config.yaml + the model."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_study_args(parser)
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


EXIT_NOT_REPRODUCED = 1


class Verify(Command):
    """Reload an export in its runtime, re-measure accuracy and latency, compare with its config.yaml."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dir", help="a directory written by `tuner export`")
        parser.add_argument(
            "--latency-tolerance",
            type=float,
            default=DEFAULTS.latency_tolerance,
            metavar="FRACTION",
            help="latency reproduces within the recorded 95%% CI or this fraction of it (default 0.10)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from tuner.artifact import checks_table, read_config, verify

        check_number("--latency-tolerance", args.latency_tolerance, 0, why=" (a fraction: 0.10 = 10%)")
        read_config(args.dir)  # a broken or incomplete export is refused before torch loads
        ok, checks = verify(args.dir, args.latency_tolerance)
        print(checks_table(checks))
        print("reproduces" if ok else "does NOT reproduce")
        return 0 if ok else EXIT_NOT_REPRODUCED


class Explain(Command):
    """Why a trial is fast or slow: per-layer time of the pick (or --trial) against the baseline (or --against),
    from each runtime's own profiler, with findings in words."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_study_args(parser)
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


COMMANDS: dict[str, type[Command]] = {
    "run": Run,
    "measure": Measure,
    "report": Report,
    "export": Export,
    "verify": Verify,
    "explain": Explain,
}
DEFAULT_COMMAND = "run"


@output_guarded
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if DEFAULT_COMMAND in COMMANDS and (not argv or argv[0] not in COMMANDS) and argv[:1] not in (["-h"], ["--help"]):
        argv.insert(0, DEFAULT_COMMAND)  # `tuner --model m` means `tuner run --model m`
    parser = _Parser(prog="tuner", description="Search for the fastest accurate-enough build of a model.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands = {}
    for name, cls in COMMANDS.items():
        command = cls()
        command.add_arguments(sub.add_parser(name, help=cls.__doc__, description=cls.__doc__))
        commands[name] = command
    args = parser.parse_args(argv)
    from tuner.study.storage import quiet_optuna

    try:
        with quiet_optuna(), logs.to(logs.stderr):  # the library's lines on stderr, results on stdout
            return commands[args.command].run(args)
    except TunerError as err:
        print(f"tuner: error: {err}", file=sys.stderr)
        return EXIT_RESOURCE if isinstance(err, ResourceExhausted) else EXIT_USAGE
    except Exception as err:
        from tuner.study.storage import storage_failure

        failure = storage_failure(err)
        if failure is None:
            raise  # a bug: its traceback is wanted
        print(f"tuner: error: {failure}", file=sys.stderr)
        return EXIT_RESOURCE
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))  # a second Ctrl-C: out at once, no traceback
        print("tuner: interrupted (a study keeps what it recorded: the same command resumes it)", file=sys.stderr)
        return 130
