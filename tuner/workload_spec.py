"""What the user brings, as plain data: ``WorkloadSpec`` (it crosses into trial worker processes and is
recorded on a study), made from the command line's values and checked before anything loads (``make_spec``),
its paths made absolute as a study records them (``resolve_spec``). Loading it: tuner.workload.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuner.data import HOLDOUT_SHARE
from tuner.dataset import check_inputs
from tuner.defaults import DEFAULTS
from tuner.errors import ConfigError, check_number
from tuner.paths import absolute, check_studies_dir

LOCAL = frozenset({"cache_dir", "claims"})  # the reader's own fields of a WorkloadSpec: never recorded


@dataclass(frozen=True)
class WorkloadSpec:
    model: str = DEFAULTS.model
    data: str = DEFAULTS.data
    weights: str | None = None
    resolution: int | None = None  # None: the data set's default (digits 32, ImageFolder 224)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    seed: int = DEFAULTS.seed
    train_steps: int = 100  # baseline training budget, only used without --weights
    holdout: float = HOLDOUT_SHARE  # share of the validation images kept from the search (export scores them)
    recover_steps: int = 100  # short recovery, optimizer steps for half the compute removed (tuner.passes.recover)
    cache_dir: str | None = "studies/cache"  # None: cache nothing
    student: str | None = None  # --student: the user's own smaller model (a --model value), distilled from model
    # The study's storage URL where cache entries are claimed on it (PostgreSQL: tuner.claims), so that the workers
    # of one study build each entry once; like cache_dir, the reader's own: never recorded (it holds a password).
    claims: str | None = field(default=None, repr=False)

    @property
    def onnx(self) -> bool:
        """The model is an ONNX file (no torch graph: no pruning, folding or torch placements)."""
        return self.model.lower().endswith(".onnx")

    def to_record(self) -> dict[str, Any]:
        """What a study records of its workload (the cache directory is the reader's own)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in LOCAL}

    @classmethod
    def from_record(cls, record: Any, cache_dir: str | None, source: str = "the study") -> WorkloadSpec:
        if not isinstance(record, dict):
            raise ConfigError(f"{source} records no workload; was it created by `tuner run`?")
        known = {f.name for f in dataclasses.fields(cls)} - LOCAL
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in known}  # JSON lists
        return cls(**kwargs, cache_dir=cache_dir)


def make_spec(
    model: str = DEFAULTS.model,
    data: str = DEFAULTS.data,
    weights: str | None = None,
    resolution: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = DEFAULTS.seed,
    *,
    train_steps: int | None = None,
    recover_steps: int | None = None,
    holdout: float | None = None,
    student: str | None = None,
    studies_dir: str = DEFAULTS.studies_dir,
) -> WorkloadSpec:
    """A WorkloadSpec from the command line's values (``tuner run`` / ``measure``, ``tuner.tune``), each checked
    before anything loads: bad input is one line naming the flag; None takes the default."""
    defaults = WorkloadSpec()
    for flag, value in (("--train-steps", train_steps), ("--recover-steps", recover_steps)):
        check_number(flag, value, 0)
        if value is not None and value != int(value):
            raise ConfigError(f"{flag} counts optimizer steps: it must be a whole number, got {value}.")
    if not 0 <= seed < 2**32:  # numpy's and Optuna's seeds are 32-bit
        raise ConfigError(f"--seed must be >= 0 and below 2**32, got {seed}.")
    check_inputs(resolution, mean, std)
    if holdout is not None and not (math.isfinite(holdout) and 0 <= holdout < 1):
        raise ConfigError(f"--holdout must be a fraction >= 0 and < 1 (0 keeps none apart), got {holdout}.")
    check_student(model, student)
    check_studies_dir(studies_dir)
    return WorkloadSpec(
        model=model,
        data=data,
        weights=weights,
        resolution=resolution,
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
        seed=seed,  # type: ignore[arg-type]
        train_steps=defaults.train_steps if train_steps is None else train_steps,
        recover_steps=defaults.recover_steps if recover_steps is None else int(recover_steps),
        holdout=defaults.holdout if holdout is None else holdout,
        cache_dir=f"{studies_dir}/cache",
        student=student or None,
    )


def resolve_spec(spec: WorkloadSpec) -> WorkloadSpec:
    """The spec as a study records it: every file it names (an ONNX or .py model, a saved module, the student, the
    data folder, the weights) made absolute, and where an ONNX file fixes the images' size and no --resolution was
    given, that size. ``tuner export``, ``verify`` and the re-measure then read the same workload from any folder
    (a relative ``net.onnx`` means nothing elsewhere, and a resolution left to the file is not the data's default)."""
    resolution = spec.resolution
    if spec.onnx and resolution is None:
        from tuner import onnx_model

        resolution = onnx_model.read_signature(Path(spec.model)).height  # a bad file: one line, before any work
    return dataclasses.replace(
        spec,
        model=absolute(spec.model),
        student=absolute(spec.student),
        data=spec.data if spec.data == "digits" else absolute(spec.data),
        weights=absolute(spec.weights),
        resolution=resolution,
    )


def check_recorded_paths(spec: WorkloadSpec, source: str) -> None:
    """A study recorded before its paths were made absolute (``resolve_spec``) names its files relative to the
    folder it ran in: from another folder, say so in one line rather than that the file does not exist."""
    for flag, value in (
        ("--model", spec.model),
        ("--student", spec.student),
        ("--data", spec.data),
        ("--weights", spec.weights),
    ):
        if not value or value == "digits":
            continue
        target, sep, _ = value.rpartition(":")
        path = Path(target if sep and target.endswith(".py") else value)
        a_file = flag in ("--data", "--weights") or path.suffix in (".py", ".onnx", ".pt")  # not a model's name
        if a_file and not path.is_absolute() and not path.exists():
            raise ConfigError(
                f"{source} recorded {flag} {value} relative to the folder it ran in, and {path} is "
                f"not in {Path.cwd()}; run this from the folder the study ran in (studies created "
                "now record absolute paths)."
            )


def check_student(model: str, student: str | None) -> None:
    """A student is a torch model trained here against a torch model: refuse an ONNX file on either side."""
    if student and model.lower().endswith(".onnx"):
        raise ConfigError(
            f"--student {student} is distilled from the model's torch graph; {model} is an ONNX "
            "file: bring the torch model (--model module:callable --weights FILE) or drop --student."
        )
    if student and student.lower().endswith(".onnx"):
        raise ConfigError(
            f"--student {student} is an ONNX file; a student is trained here: pass a torch model "
            "builder (a model name, module:callable or file.py:callable)."
        )
