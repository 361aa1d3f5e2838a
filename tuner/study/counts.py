"""What a study's trials add up to: how many count towards ``--n-trials``, and when the study is complete."""

from __future__ import annotations

from typing import NamedTuple

import optuna

from tuner.record import TrialRecord, read_trials

FINISHED = ("complete", "pruned", "fail")


class TrialCounts(NamedTuple):
    accounted: int  # finished trials that count towards n_trials (not repeats, nor trials the budget did not start)
    running: int
    waiting: int
    repeats: int  # finished trials that repeated an earlier candidate: they reused its outcome, spent nothing
    repeat_streak: int  # repeats in a row at the end of the finished trials (by trial number)


def _retried(trials: list[TrialRecord]) -> set[int]:
    """Numbers of failed trials that were queued again (by the stale-trial callback or after a crash)."""
    return {t.stale_retry_of for t in trials if t.stale_retry_of is not None} | {
        t.retry_of for t in trials if t.retry_of is not None
    }


def count_trials(study: optuna.Study) -> TrialCounts:
    """A failed trial that was retried is accounted for by its retry; a repeat is not accounted at all:
    it cost no build and no measurement, so it does not spend the user's ``--n-trials``; nor does a proposal the
    time budget did not start."""
    trials = read_trials(study)
    retried = _retried(trials)
    finished = sorted((t for t in trials if t.state in FINISHED and t.number not in retried), key=lambda t: t.number)
    is_repeat = [t.repeat for t in finished]
    streak = next((i for i, r in enumerate(reversed(is_repeat)) if not r), len(is_repeat))
    return TrialCounts(
        len(finished) - sum(is_repeat) - sum(t.budget_skip for t in finished),
        sum(t.state == "running" for t in trials),
        sum(t.state == "waiting" for t in trials),
        sum(is_repeat),
        streak,
    )


def space_exhausted(repeat_streak: int, n_trials: int) -> bool:
    """After a repeat the next proposal is random, so a long run of repeats means random draws keep landing on
    measured candidates: 50 in a row leave under 6% of the space unmeasured at 95% confidence. Counting repeats
    in a row, not in all, keeps a large space searched when several workers each propose a few repeats."""
    return repeat_streak >= min(n_trials, 50)


def study_complete(counts: TrialCounts, n_trials: int) -> bool:
    """n_trials candidates measured, or the space (nearly) exhausted."""
    return counts.accounted >= n_trials or space_exhausted(counts.repeat_streak, n_trials)
