"""Error taxonomy.

Everything a user can cause is a ``TunerError`` and reaches the screen as one line
(the CLI prints ``str(err)`` and exits 2).  Bugs (TypeError, KeyError, ...) are not
caught anywhere on purpose: they should show a traceback.
"""

from __future__ import annotations

import errno
import functools
import inspect
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar


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


class ResourceExhausted(TunerError):
    """The machine ran out of something the study needs (disk space, its database): not the candidate's doing.
    The study stops (exit 74) and resumes, the trial that met it run again, once the resource is back."""


_SHORTAGES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the filesystem is read-only",
}


def shortage(err: BaseException) -> str | None:
    """What ran out, where ``err`` (or an error it was raised from or during) says a disk did: its errno, or the
    OS's words quoted by a library that wrapped it (ORT's quantizer, torch.save)."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in _SHORTAGES:
            return f"{_SHORTAGES[seen.errno]}" + (f" ({seen.filename})" if seen.filename else "")
        text = str(seen)
        for code, words in (
            (errno.ENOSPC, "No space left on device"),
            (errno.EDQUOT, "Disk quota exceeded"),
            (errno.ENOSPC, "database or disk is full"),
        ):
            if words in text:
                return _SHORTAGES[code]
        seen = seen.__cause__ or seen.__context__
    return None


def full_disk(path: str | Path | None) -> str | None:
    """ "no space left on the device" when ``path``'s filesystem has under 1 MiB free: what a write error means
    there, whatever the library that met it said (torch.save's is ``unexpected pos 64 vs 0``)."""
    if path is None:
        return None
    where = Path(path).absolute()
    while not where.exists() and where != where.parent:  # a folder a full disk could not create: its parent's
        where = where.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return None
    return "no space left on the device" if free < (1 << 20) else None


class HopelessCandidate(TunerError):
    """The accuracy pass showed the candidate cannot meet the accuracy constraint: stopped early."""


def first_line(text: object, limit: int = 300, *, whole: bool = False) -> str:
    """The first non-empty line of ``text`` (``whole``: all of it, line breaks as spaces), at most ``limit``
    characters: a reason short enough for one line."""
    if whole:
        return clip(" ".join(str(text).split()), limit)
    return clip(next((line.strip() for line in str(text).strip().splitlines() if line.strip()), ""), limit)


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut between words with "…" where it is longer: never mid-word."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:(") + "…"


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


# ---------------------------------------------------------------- one message, two ways in
# Checks deep in the tuner name an option the command line's way (``--max-drop``); a Python entry point wrapped by
# ``in_keywords`` re-raises the same error naming its own keyword (``max_drop``), so the checks are written once.
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
KEYWORD_OF_FLAG = {
    "data": "train",
    "out": "path",
}  # tune(train=) is --data, export(path) --out; the others are the flag's name in snake case
F = TypeVar("F", bound=Callable[..., Any])


def as_keywords(text: str, keywords: set[str]) -> str:
    """``text`` with each ``--flag`` that is one of ``keywords`` written as that keyword."""

    def keyword(m: re.Match[str]) -> str:
        names = (KEYWORD_OF_FLAG.get(m[1]), m[1].replace("-", "_"))  # measure_config(data=) is --data's own name
        return next((name for name in names if name in keywords), m[0])

    return FLAG.sub(keyword, text)


def in_keywords(fn: F) -> F:
    """A Python entry point whose TunerErrors name its keyword arguments, not the command line's flags."""
    keywords = set(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TunerError as err:
            text = as_keywords(str(err), keywords)
            if text == str(err):
                raise
            raise type(err)(text) from None

    return wrapper  # type: ignore[return-value]
