"""One home for defaults (``tuner.defaults``): every Python keyword that a command-line flag also sets takes the
flag's default, command by command, read from the real parsers and the real signatures."""

from __future__ import annotations

import argparse
import inspect
from typing import Any

import pytest

from tuner import cli
from tuner.api.measuring import measure_config
from tuner.api.tune_result import TuneResult
from tuner.api.tuning import load, tune
from tuner.artifact.export import export
from tuner.artifact.verify import verify
from tuner.errors import KEYWORD_OF_FLAG
from tuner.explain.trials import explain_study
from tuner.workload_spec import make_spec

# Each command, the fewest arguments it parses with, and the Python entry points that take its settings.
CASES = [
    ("run", [], [tune, make_spec]),
    ("measure", ["--config", "c.yaml"], [measure_config, make_spec]),
    ("report", ["--study", "s"], [load]),
    ("export", ["--study", "s", "--trial", "0", "--out", "o"], [TuneResult.export, export]),
    ("verify", ["d"], [verify]),
    ("explain", ["--study", "s"], [explain_study]),
]


def _flag_defaults(command: str, argv: list[str]) -> dict[str, Any]:
    """The defaults ``tuner COMMAND`` gives each flag, by the keyword that takes it in Python (``--data``: ``train``
    for ``tune``, ``data`` elsewhere)."""
    parser = argparse.ArgumentParser()
    cli.COMMANDS[command]().add_arguments(parser)
    return {k: v for k, v in vars(parser.parse_args(argv)).items() if f"--{k.replace('_', '-')}" not in argv}


def _keyword_defaults(fn: Any) -> dict[str, Any]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize(("command", "argv", "functions"), CASES, ids=[c[0] for c in CASES])
def test_every_keyword_with_a_flag_has_the_flags_default(command, argv, functions):
    flags = _flag_defaults(command, argv)
    compared = 0
    for fn in functions:
        keywords = _keyword_defaults(fn)
        for flag, default in flags.items():
            name = next((n for n in (KEYWORD_OF_FLAG.get(flag), flag) if n in keywords), None)
            if name is None:
                continue
            assert keywords[name] == default, (
                f"{fn.__qualname__}({name}={keywords[name]!r}) but tuner {command} "
                f"--{flag.replace('_', '-')} defaults to {default!r}"
            )
            compared += 1
    assert compared >= {"run": 20, "measure": 12}.get(command, 1), compared  # the comparison is not vacuous


def test_a_changed_default_would_be_caught():
    """The check reads what it compares: a keyword whose default differs from its flag's is found."""

    def drifted(model: str = "resnet34", seed: int = 0) -> None: ...

    flags = _flag_defaults("run", [])
    keywords = _keyword_defaults(drifted)
    assert [k for k in keywords if keywords[k] != flags[k]] == ["model"]
