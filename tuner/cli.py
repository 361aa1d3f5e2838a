"""Command line: ``tuner [run] ...`` searches, ``tuner measure`` builds and measures one config.

Each command is a small class (as in optuna/cli.py). Anything the user got wrong is a
TunerError: one line on stderr, exit code 2, no traceback. Progress goes to stderr, results
to stdout, so ``--json`` output can be piped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from tuner.errors import TunerError

EXIT_USAGE = 2


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"tuner: error: {message} (see 'tuner {self.prog.split()[-1]} --help')\n")


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload")
    g.add_argument("--model", default="resnet18",
                   help="resnet18|resnet34|resnet50, a torchvision/timm name, or module:callable / file.py:callable")
    g.add_argument("--data", default="digits", help="'digits' (built in, offline) or an ImageFolder directory")
    g.add_argument("--weights", help="a state_dict file (loaded with weights_only); without it a baseline is trained")
    g.add_argument("--resolution", type=int, help="input size in pixels (default: digits 32, ImageFolder 224)")
    g.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="normalization mean (0..1)")
    g.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalization std (0..1)")
    g.add_argument("--seed", type=int, default=0, help="data split, training and sampler seed")
    g.add_argument("--train-steps", type=int, default=None, help="baseline training steps when no --weights")
    g.add_argument("--recover-steps", type=int, default=None, help="distillation steps after pruning")
    g.add_argument("--studies-dir", default="studies", help="where studies, caches and artifacts live")


def workload_spec(args: argparse.Namespace) -> Any:
    from tuner.workload import WorkloadSpec

    defaults = WorkloadSpec()
    for name in ("train_steps", "recover_steps"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise TunerError(f"--{name.replace('_', '-')} must be >= 0, got {value}.")
    return WorkloadSpec(
        model=args.model, data=args.data, weights=args.weights, resolution=args.resolution,
        mean=tuple(args.mean) if args.mean else None, std=tuple(args.std) if args.std else None, seed=args.seed,
        train_steps=defaults.train_steps if args.train_steps is None else args.train_steps,
        recover_steps=defaults.recover_steps if args.recover_steps is None else args.recover_steps,
        cache_dir=f"{args.studies_dir}/cache",
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
        parser.add_argument("--config", required=True, help="YAML file with candidate keys (prune_ratio, precision, ...)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        from tuner.build import build
        from tuner.candidate import Candidate
        from tuner.measure import measure
        from tuner.runtimes import check_supported
        from tuner.workload import load_workload

        candidate = Candidate.from_yaml(args.config)
        check_supported(candidate)  # refuse before loading data or training anything
        workload = load_workload(workload_spec(args), log)
        built = build(workload, candidate)
        metrics = measure(built, workload.data)
        result = {**metrics.to_dict(), "config": candidate.to_dict(), "build_seconds": built.seconds}
        if args.json:
            print(json.dumps(result))
        else:
            lo, hi = metrics.latency_ci_ms
            print(f"{candidate}\n"
                  f"accuracy       {metrics.accuracy:.2%} ({len(workload.data.val)} validation images)\n"
                  f"latency        {metrics.latency_ms:.3f} ms per batch of {candidate.batch_size} "
                  f"(95% CI {lo:.3f}-{hi:.3f}, p95 {metrics.latency_p95_ms:.3f}, n={metrics.samples})\n"
                  f"per sample     {metrics.per_sample_ms:.3f} ms, {metrics.throughput:.0f} samples/s\n"
                  f"model          {metrics.params:,} params, {metrics.macs:,} MACs, {metrics.size_mb:.2f} MB, "
                  f"executed {metrics.executed_precision}, {metrics.threads} threads")
        return 0


class Run(Command):
    """Search (or resume) a study and print its Pareto front (the default command)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_workload_args(parser)
        g = parser.add_argument_group("study")
        g.add_argument("--space", default="default", help="search space: a name in search_spaces/ or a YAML path")
        g.add_argument("--objectives", default="accuracy_latency", help="a name in objectives/ or a YAML path")
        g.add_argument("--study", help="study name (default: model-data-resolution-hardware)")
        g.add_argument("--storage", help="any Optuna storage URL (default: sqlite under --studies-dir)")
        g.add_argument("--sampler", default="tpe", help="tpe | nsga2 | gp | random")
        g.add_argument("--n-trials", type=int, default=20, help="total trials in the study, baseline included")
        g.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
        g.add_argument("--heartbeat", type=float, default=10.0,
                       help="seconds between a running trial's heartbeats; 3 missed ones mark its worker dead")
        g.add_argument("--max-retries", type=int, default=1, help="re-runs of a trial whose worker died or crashed")
        g.add_argument("--trial-timeout", type=float, metavar="SECONDS",
                       help="stop a trial (and fail it) after this long; default: 30x the setup time, at least 900 s")
        g.add_argument("--remeasure-rounds", type=int, default=3,  # a median of 3 outlasts one round in a slow phase
                       help="when the study is complete, re-time the Pareto set in fresh processes, interleaved, "
                            "this many rounds (0: skip)")
        g.add_argument("--allow-mixed-hardware", action="store_true",
                       help="join a study started on other hardware (its latencies are then not comparable)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def run(self, args: argparse.Namespace) -> int:
        from tuner import summary
        from tuner.data import DEFAULT_RESOLUTION
        from tuner.objectives import load_objectives
        from tuner.remeasure import format_remeasure, remeasure_pareto
        from tuner.space import load_space
        from tuner.study.counts import count_trials, study_complete
        from tuner.study.loop import SAMPLERS, StudySettings, run_study
        from tuner.study.storage import check_study_name, default_storage, default_study_name, mask_url

        if args.sampler not in SAMPLERS:
            raise TunerError(f"unknown sampler {args.sampler!r}; use one of {', '.join(SAMPLERS)}.")
        if args.n_trials < 1:
            raise TunerError(f"--n-trials must be >= 1, got {args.n_trials}.")
        space, objectives, spec = load_space(args.space), load_objectives(args.objectives), workload_spec(args)
        resolution = args.resolution or DEFAULT_RESOLUTION.get(args.data, 224)
        name = check_study_name(args.study or default_study_name(spec, resolution))
        storage = args.storage or default_storage(args.studies_dir, name)
        log(f"study {name} on {mask_url(storage)}")
        log(f"placements: {', '.join(space.placements)}" +
            "".join(f"\n  dropped {d}" for d in space.dropped))
        log(f"objectives: {', '.join(f'{d} {n}' for n, d in zip(objectives.names, objectives.directions))}"
            + (f"; subject to {', '.join(map(str, objectives.constraints))}" if objectives.constraints else ""))
        if args.heartbeat <= 0 or args.max_retries < 0:
            raise TunerError("--heartbeat must be > 0 and --max-retries >= 0.")
        settings = StudySettings(name, storage, space, objectives, spec, args.sampler, args.seed, args.n_trials,
                                 args.timeout, args.heartbeat, args.max_retries, args.allow_mixed_hardware,
                                 args.trial_timeout)
        if args.trial_timeout is not None and not 0 < args.trial_timeout < float("inf"):
            raise TunerError(f"--trial-timeout must be a number of seconds > 0, got {args.trial_timeout}.")
        if args.remeasure_rounds < 0:
            raise TunerError(f"--remeasure-rounds must be >= 0, got {args.remeasure_rounds}.")
        with summary.ProgressBar(args.n_trials) as bar:
            study = run_study(settings, bar.update, log)
        remeasured = None
        if args.remeasure_rounds and study_complete(count_trials(study), args.n_trials):
            log(f"re-timing the Pareto set and the baseline in fresh processes ({args.remeasure_rounds} rounds)")
            remeasured = remeasure_pareto(study, spec.cache_dir, rounds=args.remeasure_rounds, log=log)
        found = summary.summarize(study, objectives)
        if args.json:
            print(json.dumps({"study": name, "storage": mask_url(storage), **found,
                              "remeasure": remeasured.to_dict() if remeasured else None}))
        else:
            print(summary.pareto_table(found))
            if remeasured:
                print("\n" + format_remeasure(remeasured))
            print(f"\nstorage: {mask_url(storage)}  (optuna.load_study(study_name={name!r}, storage=...))")
        return 0


def _add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study name `tuner run` printed")
    parser.add_argument("--storage", help="its Optuna storage URL (default: sqlite under --studies-dir)")
    parser.add_argument("--studies-dir", default="studies", help="where studies, caches and artifacts live")


class Report(Command):
    """Write one self-contained HTML page of a study: Pareto front, hypervolume, importances, trials, findings."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_study_args(parser)
        parser.add_argument("--out", help="the HTML file (default: <studies-dir>/<study>.html)")
        parser.add_argument("--csv", help="also write the trial table as CSV here")

    def run(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        from tuner.report import write_report
        from tuner.study.storage import load_existing_study

        study = load_existing_study(args.study, args.storage, args.studies_dir)
        out = Path(args.out or Path(args.studies_dir) / f"{args.study}.html")
        info = write_report(study, out, args.csv)
        print("\n".join(f"- {f}" for f in info.findings))
        print(f"report: {out}" + (f"\ntrials: {args.csv}" if args.csv else ""))
        return 0


class Export(Command):
    """Rebuild one study point (by trial or budget), re-measure it, and write config.yaml + the model."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_study_args(parser)
        pick = parser.add_mutually_exclusive_group(required=True)
        pick.add_argument("--trial", type=int, help="export this trial number")
        pick.add_argument("--max-drop", type=float, metavar="POINTS",
                          help="the fastest feasible trial losing at most this many accuracy points")
        pick.add_argument("--max-latency-ms", type=float, metavar="MS",
                          help="the most accurate trial at or under this per-sample latency")
        parser.add_argument("--out", required=True, help="directory to write (new, empty, or a previous export)")
        parser.add_argument("--torch-format", default="export", choices=("export", "state_dict"),
                            help="torch placements: a torch.export program (falls back to state_dict) or a state_dict")

    def run(self, args: argparse.Namespace) -> int:
        from pathlib import Path

        from tuner.artifact import check_out, export, select_trial
        from tuner.names import CONFIG_FILE
        from tuner.study.storage import load_existing_study

        check_out(Path(args.out))
        study = load_existing_study(args.study, args.storage, args.studies_dir)
        trial, why = select_trial(study, args.trial, args.max_drop, args.max_latency_ms)
        done = export(study, trial, why, args.out, args.studies_dir, args.storage, args.torch_format, log)
        m = done.config["metrics"]["export"]
        print(f"exported trial #{done.trial} ({why}) to {done.out}: {done.artifact} ({done.kind}), {CONFIG_FILE}\n"
              f"re-measured: {m['accuracy']:.2%}, {m['per_sample_ms']:.4f} ms/sample "
              f"(study: {done.config['metrics']['study']['per_sample_ms']:.4f}); check it with "
              f"`tuner verify {done.out}`")
        return 0


EXIT_NOT_REPRODUCED = 1


class Verify(Command):
    """Reload an export in its runtime, re-measure accuracy and latency, compare with its config.yaml."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dir", help="a directory written by `tuner export`")
        parser.add_argument("--latency-tolerance", type=float, default=0.10, metavar="FRACTION",
                            help="latency reproduces within the recorded 95%% CI or this fraction of it (default 0.10)")

    def run(self, args: argparse.Namespace) -> int:
        from tuner.artifact import checks_table, verify

        if args.latency_tolerance < 0:
            raise TunerError(f"--latency-tolerance must be >= 0, got {args.latency_tolerance}.")
        ok, checks = verify(args.dir, log, args.latency_tolerance)
        print(checks_table(checks))
        print("reproduces" if ok else "does NOT reproduce")
        return 0 if ok else EXIT_NOT_REPRODUCED


COMMANDS: dict[str, type[Command]] = {"run": Run, "measure": Measure, "report": Report, "export": Export,
                                      "verify": Verify}
DEFAULT_COMMAND = "run"


def _quiet_libraries() -> None:
    """Our own lines say what happens; Optuna's per-trial INFO logs and experimental warnings repeat it."""
    import warnings

    import optuna

    # ERROR: a failed trial is one line of ours with its reason; Optuna would add its traceback as a warning.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
    _quiet_libraries()
    try:
        return commands[args.command].run(args)
    except TunerError as err:
        print(f"tuner: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130
