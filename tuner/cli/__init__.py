"""Command line: ``tuner [run] ...`` searches, ``tuner measure`` builds and measures one config.

Each command is a small class (as in optuna/cli.py), one module each; commands.py parses and dispatches. Anything
the user got wrong is a TunerError: one line on stderr, exit code 2, no traceback. Progress goes to stderr, results
to stdout, so ``--json`` output can be piped.
"""

from tuner.cli.commands import COMMANDS, main

__all__ = ["COMMANDS", "main"]
