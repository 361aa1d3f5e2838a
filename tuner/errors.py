"""Error taxonomy.

Everything a user can cause is a ``TunerError`` and reaches the screen as one line
(the CLI prints ``str(err)`` and exits 2).  Bugs (TypeError, KeyError, ...) are not
caught anywhere on purpose: they should show a traceback.
"""

from __future__ import annotations

import math


class TunerError(Exception):
    """A problem the user can fix; the message names it and says what to do."""


class ConfigError(TunerError):
    """A configuration, search-space or objectives file, or a CLI value, is invalid."""


class UnsupportedCombination(ConfigError):
    """A valid configuration that this machine or placement cannot run (refused before work)."""


class ModelError(TunerError):
    """The model cannot be constructed, or its weights cannot be loaded."""


class DataError(TunerError):
    """The data set is missing, empty or unusable."""


class CandidateBuildError(TunerError):
    """Building one candidate failed; the trial fails, the study goes on."""


class MeasurementError(TunerError):
    """Measuring one candidate failed; the trial fails, the study goes on."""


class HopelessCandidate(TunerError):
    """The accuracy pass showed the candidate cannot meet the accuracy constraint: stopped early."""


def first_line(text: object, limit: int = 300, *, whole: bool = False) -> str:
    """The first non-empty line of ``text`` (``whole``: all of it, line breaks as spaces), at most ``limit``
    characters: a reason short enough for one line."""
    if whole:
        return " ".join(str(text).split())[:limit]
    return next((line.strip() for line in str(text).strip().splitlines() if line.strip()), "")[:limit]


def one_line(err: BaseException, limit: int = 300, *, whole: bool = False) -> str:
    """``Type: first line of the message`` (``whole``: all of it; at most ``limit`` characters): how a foreign
    error, from a user's model or a library, becomes the one line a trial or the screen records. ``whole`` where
    the cause is often past the first line (a file that fails to parse, a user's function)."""
    text = first_line(err, limit, whole=whole)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def check_number(flag: str, value: float | None, low: float, *, above: bool = False, why: str = "") -> None:
    """Refuse NaN, inf and values below ``low`` (or not above it), naming the flag, the value and why."""
    if value is None:
        return
    bound = f"> {low:g}" if above else f">= {low:g}"
    if not math.isfinite(value) or value < low or (above and value == low):
        kind = "a finite number " if isinstance(value, float) else ""
        raise TunerError(f"{flag} must be {kind}{bound}{why}, got {value}.")
