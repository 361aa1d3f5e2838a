"""The study's quality metric: top-1 by default, or a function of the user's ``(logits, labels) -> float``.

A function of the user's is scored in the study's own process, from the validation logits a trial's process
sends back (a few kilobytes to megabytes): any function works, a lambda in a notebook too, and nothing of it
has to be pickled for the child. Its value is what the study calls ``accuracy`` (and ``accuracy_drop``, the
reference's value minus it, in percentage points), so that every objectives file, constraint, pick (``export --max-drop``), report
and summary states its rules once, over one name; the runtime's top-1 is kept beside it as ``top1``. A
lower-is-better metric (a loss, an error rate) is negated, so higher is better everywhere. Only top-1 can stop
a hopeless trial early (a partial top-1 bounds the whole; a partial F1 bounds nothing)."""

from __future__ import annotations

import hashlib
import math
import numbers
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.errors import ConfigError, MeasurementError, one_line

TOP1 = "top1"
AMBIGUOUS_DROP = 0.1  # a drop budget above 0 and below this reads as a fraction (0.01 = 1 point): refused


def drop_points(reference: float, value: float) -> float:
    """The accuracy drop of ``value`` below ``reference``, in percentage points (``tuner.names.DROP_UNIT``)."""
    return 100.0 * (reference - value)


def check_drop_budget(value: float, what: str) -> None:
    """A drop budget in points: a number >= 0, and not one that looks like a fraction (``what`` names where the
    user wrote it: ``--max-drop``, ``max_drop=``, an objectives file's constraint)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} is an accuracy drop in percentage points and must be a number >= 0, got {value!r}.")
    if 0 < value < AMBIGUOUS_DROP:
        raise ConfigError(
            f"{what} {value:g} is ambiguous: drops are in percentage points, so it means "
            f"{value:g} points, but it reads like a fraction ({value:g} = {100 * value:g} points); "
            f"write {100 * value:g} for {100 * value:g} points (0 allows no drop at all)."
        )


def top1_of(metrics: dict[str, Any]) -> float:
    """The runtime's top-1 of a metrics dict: ``top1`` where a custom metric took ``accuracy``."""
    return float(metrics.get(TOP1, metrics["accuracy"]))


def near_chance(top1: float, classes: int, images: int) -> bool:
    """Top-1 not clearly above guessing: below twice chance (halfway from chance to 100% with few classes), or
    within 3 standard errors of chance on ``images`` images. Speedups over such a model say nothing of a model that
    works (wrong weights, class order, normalization or resolution are the usual causes)."""
    chance = 1.0 / max(classes, 1)
    return top1 < max(min(2 * chance, (1 + chance) / 2), chance + 3 * math.sqrt(chance * (1 - chance) / max(images, 1)))


def chance_warning(reference: dict[str, Any]) -> str | None:
    """The warning for a reference model near chance (``near_chance``), or None."""
    top1, classes = top1_of(reference), int(reference["num_classes"])
    if not near_chance(top1, classes, int(reference["validation_images"])):
        return None
    return (
        f"warning: the reference model's top-1 is {top1:.1%} on {classes} classes (chance: {1 / classes:.1%}): "
        "it has not learned this data, so speedups and drops against it mean little; check that --weights were "
        "trained on these classes in this order, and --mean/--std and --resolution"
    )


def metric_words(record: dict[str, Any] | None) -> str:
    """What a study calls accuracy, for a title or a column (``Metric.record()`` as the study keeps it): "top-1
    accuracy", or the user's metric by its name."""
    name = (record or {}).get("name") or TOP1
    return "top-1 accuracy" if name == TOP1 else str(name)


@dataclass(frozen=True)
class Metric:
    fn: Callable[[Any, Any], Any] | None = None  # None: top-1, computed in the trial's process
    name: str = TOP1
    higher_is_better: bool = True

    @property
    def custom(self) -> bool:
        return self.fn is not None

    def score(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """The function on torch tensors (logits float32 N x classes, labels int64 N), as a float, higher better."""
        import torch

        assert self.fn is not None
        try:
            value = self.fn(torch.from_numpy(logits), torch.from_numpy(labels))
            number = _as_number(value.item() if hasattr(value, "item") else value)
        except Exception as err:  # noqa: BLE001 - the user's function can raise anything: one line for this trial
            raise MeasurementError(
                f"metric {self.name} failed on {logits.shape} logits: {one_line(err, 200, whole=True)}"
            ) from None
        if number is None:
            shown = "None" if value is None else f"{repr(value)[:60]} (a {type(value).__name__})"
            raise MeasurementError(
                f"metric {self.name} returned {shown}; it must return a finite number (a float, "
                "or a one-element tensor)."
            )
        if not math.isfinite(number):
            raise MeasurementError(f"metric {self.name} returned {number}; it must return a finite number.")
        return number if self.higher_is_better else -number

    def rescore(self, metrics: dict[str, Any], logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """``metrics`` with ``accuracy`` = this metric, and the runtime's top-1 kept as ``top1``."""
        return {**metrics, TOP1: metrics["accuracy"], "accuracy": self.score(logits, labels)}

    def record(self) -> dict[str, Any]:
        """What a study keeps of its metric: a study resumed with another one would mix two scores."""
        return {"name": self.name, "higher_is_better": self.higher_is_better, "code": _code_id(self.fn)}


def _as_number(value: Any) -> float | None:
    """A real number as a float; None for anything else (a string such as "0.9", None, a bool, a complex): a
    metric that returns one is a bug to report, not a value to coerce."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        return None
    return float(value)


TOP1_METRIC = Metric()  # the default: top-1, computed (and stopped early when hopeless) in the trial's process


def make_metric(fn: Callable[[Any, Any], Any] | None, higher_is_better: bool = True, name: str | None = None) -> Metric:
    if fn is None:
        if not higher_is_better:
            raise ConfigError("higher_is_better=False needs a metric function; top-1 is higher-is-better.")
        return TOP1_METRIC
    if not callable(fn):
        raise ConfigError(f"metric must be a function of (logits, labels) -> float, got {type(fn).__name__}.")
    return Metric(fn, name or getattr(fn, "__name__", type(fn).__name__), bool(higher_is_better))


def _code_id(fn: Callable[..., Any] | None) -> str | None:
    """What the function computes, as its code (bytecode, names and constants, nested functions' too), so that an
    edited metric is another one and a lambda moved to another line is not; a callable object: its type."""
    if fn is None:
        return None
    code = getattr(fn, "__code__", None)
    text = _code_text(code) if code is not None else f"{type(fn).__module__}.{type(fn).__qualname__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _code_text(code: types.CodeType) -> str:
    consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}|{code.co_names}|{consts}"
