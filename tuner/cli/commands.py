"""The command table and ``main``: the default command inserted, the subcommand run, its errors as one line."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from tuner import logs
from tuner.cli.arguments import EXIT_USAGE, Command, Parser
from tuner.cli.explain import Explain
from tuner.cli.export import Export
from tuner.cli.measure import Measure
from tuner.cli.report import Report
from tuner.cli.run import Run
from tuner.cli.verify import Verify
from tuner.errors import ResourceExhausted, TunerError
from tuner.streams import EXIT_RESOURCE, output_guarded

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
    parser = Parser(prog="tuner", description="Search for the fastest accurate-enough build of a model.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
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
