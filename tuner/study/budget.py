"""The study's time budget (``--budget 20m``): read from the user's words, and the plan that keeps the whole run,
the end-of-study re-measure included, within it.

The plan reserves the re-measure's time (one fresh process per Pareto point and the baseline, per round, plus one
point the front may still gain) and lends the trials what is left: a trial starts only when its estimate
(``tuner.study.costs``) fits, and is stopped by its timeout when it still overruns. The same plan times a run
without a budget, for the summary's account of where the time went.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import optuna

from tuner import results
from tuner.errors import TunerError
from tuner.record import TrialRecord
from tuner.study.costs import PROCESS_S, Prior, remeasure_seconds

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
NO_CAP = 100_000  # --n-trials under a budget when none is given: the budget alone ends the study
SKIPS_IN_A_ROW = 3  # proposals in a row that did not fit: the sampler's ideas are dearer than the time left
MIN_TRIAL_TIMEOUT = 5.0  # a trial's timeout is the budget left, but never below this


def parse_budget(value: Any) -> float | None:
    """Seconds from ``90s``, ``20m``, ``1.5h`` or a number of seconds; one line for anything else."""
    if value is None:
        return None
    seconds = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", value.lower())
        if found:
            seconds = float(found[1]) * UNITS[found[2] or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise TunerError(
            f"--budget must be a duration above 0 such as 90s, 20m or 1.5h (a number alone is seconds), got {value!r}."
        )
    return seconds


@dataclass
class Plan:
    """One run's clock: the budget (None: none), what the re-measure will need, and what the run spent."""

    seconds: float | None
    rounds: int  # re-measure rounds asked for (0: none)
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)  # the same instant, for the trials' own start times
    prior: Prior | None = None  # what a recovery costs before any was seen (from the reference)
    setup_s: float = 0.0  # data, model, baseline and reference, until the study opened
    remeasure_s: float = 0.0
    ended: str = ""  # why the trials stopped, when the budget stopped them

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.monotonic() - self.started)

    def reserve(self, study: optuna.Study) -> float:
        """The re-measure's time at the front's current size, plus one point it may still gain."""
        if self.seconds is None or not self.rounds:
            return 0.0
        points = _points(study)
        spare = max((remeasure_seconds([t], 1) for t in points), default=PROCESS_S)
        return remeasure_seconds(points, self.rounds) + self.rounds * spare

    def left_for_trials(self, study: optuna.Study) -> float:
        return self.left() - self.reserve(study)

    def trial_timeout(self, study: optuna.Study, default: float) -> float:
        """A trial may run until the trials' share of the budget is spent, and no longer than ``default``."""
        return default if self.seconds is None else min(default, max(MIN_TRIAL_TIMEOUT, self.left_for_trials(study)))

    def rounds_that_fit(self, study: optuna.Study) -> int:
        """The most re-measure rounds, up to those asked for, that end within the budget (all without one)."""
        if self.seconds is None:
            return self.rounds
        points, left = _points(study), self.left()
        return next((r for r in range(self.rounds, 0, -1) if remeasure_seconds(points, r) <= left), 0)

    def record(self) -> dict[str, Any]:
        """What the study keeps of this run (``tuner.record.StudyRecord.time``, read by ``costs.account``)."""
        return {
            "budget_s": self.seconds,
            "started_at": self.started_at,
            "setup_s": self.setup_s,
            "remeasure_s": self.remeasure_s,
            "wall_s": time.monotonic() - self.started,
            "ended": self.ended,
        }


def _points(study: optuna.Study) -> list[TrialRecord]:
    """What the re-measure times: the baseline and the front, each once."""
    chosen = {t.number: t for t in results.front(study)}
    base = results.baseline_trial(study)
    if base is not None:
        chosen.setdefault(base.number, base)
    return list(chosen.values())


def duration(seconds: float) -> str:
    """``95 s``, ``12m 30s``, ``1h 05m``: a budget or a time left in words."""
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"
