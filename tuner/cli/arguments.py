"""What every command shares: the parser that fails in one line, the Command base, the workload and study
argument groups, and the WorkloadSpec the workload flags make.
"""

from __future__ import annotations

import argparse
from typing import Any

from tuner.defaults import DEFAULTS

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        name = self.prog.split()[-1]
        hint = "tuner --help" if name == "tuner" else f"tuner {name} --help"
        self.exit(EXIT_USAGE, f"tuner: error: {message} (see '{hint}')\n")


def add_workload_args(p: argparse.ArgumentParser) -> None:
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


WORKLOAD_FLAGS = (
    "weights",
    "student",
    "resolution",
    "mean",
    "std",
    "seed",
    "holdout",
    "train_steps",
    "recover_steps",
    "studies_dir",
)  # what add_workload_args adds beside the model and the data: keywords of tune(), measure_config() and make_spec()


def workload_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The workload's flags as the keywords the Python API takes (the model and the data are positional)."""
    return {name: getattr(args, name) for name in WORKLOAD_FLAGS}


def workload_spec(args: argparse.Namespace) -> Any:
    from tuner.workload_spec import make_spec

    return make_spec(args.model, args.data, **workload_keywords(args))


class Command:
    """One subcommand: its docstring is the help, ``run`` returns the exit code."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def add_study_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="the study name `tuner run` printed")
    parser.add_argument("--storage", help="its Optuna storage URL (default: sqlite under --studies-dir)")
    parser.add_argument("--studies-dir", default=DEFAULTS.studies_dir, help="where studies, caches and artifacts live")
