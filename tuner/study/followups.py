"""Cheap follow-ups first: once a trial has recovered a compressed architecture new to the study, the deployment
recipes of the study's fastest feasible points so far (placement, precision with its int8 settings, threads,
batch, serving) are queued for that architecture. Its weights are cached by then, so each costs seconds (a build
and a measurement), and queued trials run before the sampler's next proposal: the budget tries the new
architecture where it can reach the front before it pays for another recovery.

Only an architecture that came close to the accuracy floor gets them (within the promotion margin: the long
recovery may still lift it); the recipes go by the study's own speed figure, each queued once per study.

A recipe found late is carried back (``carried``): when a trial becomes the study's fastest feasible point, its
recipe is queued on the architectures already built that were more accurate, each of which may become a front
point between the two (on digits the fastest recipe, OpenVINO int8 at batch 8, was found by the fourth
architecture and never tried on the three before it).

The same holds when the budget cannot start a proposal (a new recovery would not end in time): its recipe is
queued on the fastest feasible architecture already recovered instead (``instead``), so that the budget left
is spent on what still fits rather than on proposals it must refuse.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from tuner import results
from tuner.candidate import Candidate
from tuner.record import TrialRecord
from tuner.study.costs import architecture
from tuner.study.fidelity import PROMOTE_MARGIN

if TYPE_CHECKING:
    from tuner.space import SearchSpace

MOST = 3  # recipes per new architecture: the fastest few; more would crowd out the search
COMPRESSION = ("student", "drop_blocks", "prune_ratio", "prune_profile", "sparsity", "recovery")


def recipe(c: dict[str, Any]) -> dict[str, Any]:
    """How a candidate is deployed, apart from how its model was made smaller."""
    return {k: v for k, v in Candidate.fill(c).items() if k not in COMPRESSION}


def follow_ups(
    trials: list[TrialRecord],
    new: TrialRecord,
    space: SearchSpace,
    floor: float | None,
    speed: str | None = None,
    most: int = MOST,
) -> list[dict[str, Any]]:
    """The params to queue after ``new`` finished (or was stopped after its short recovery): the fastest feasible
    recipes applied to its architecture, where it is the first of its architecture in the study and came close
    enough to the floor."""
    if new.follow_up_of is not None or new.repeat:
        return []
    # What its recovery reached: measured, or screened by the short recovery and stopped (not faster than the
    # feasible points as sampled: a faster recipe of the same weights may be, and may then earn the long one).
    reached = (new.metrics or {}).get("accuracy") if new.complete else (new.screened or {}).get("accuracy")
    if reached is None:
        return []
    c = Candidate.fill(new.candidate or {})
    if not Candidate(**c).compresses or any(t.follow_up_of == new.number for t in trials):
        return []
    arch = architecture(c)
    if any(
        t.number < new.number
        and t.candidate is not None
        and (t.complete or t.stopped_early)
        and architecture(t.candidate) == arch
        for t in trials
    ):
        return []  # an architecture recovered before: its follow-ups were queued then
    if floor is not None and float(reached) < floor - PROMOTE_MARGIN:
        return []  # far below: another precision or placement only loses more
    measured, fastest = _measured(trials), _fastest_feasible(trials, speed)
    out: list[dict[str, Any]] = []
    seen = {_key(recipe(c))}
    for t in fastest:
        want = recipe(t.candidate or {})
        if _key(want) in seen:
            continue
        seen.add(_key(want))
        params = _params(space, Candidate(**{**c, **want}), measured)
        if params is not None:
            out.append(params)
        if len(out) == most:
            break
    return out


def carried(
    trials: list[TrialRecord], new: TrialRecord, space: SearchSpace, speed: str | None = None, most: int = MOST
) -> list[dict[str, Any]]:
    """The params to queue after ``new`` became the study's fastest feasible point: its recipe on the fastest few
    compressions already built (each its architecture and recovery) that were more accurate than it."""
    if not new.complete or new.repeat or new.candidate is None or not results.is_feasible(new):
        return []
    fastest = _fastest_feasible(trials, speed)
    if not fastest or fastest[0].number != new.number:
        return []  # not the fastest: its recipe is not news
    want, accuracy, measured = recipe(new.candidate), float((new.metrics or {})["accuracy"]), _measured(trials)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for t in fastest[1:]:
        shrink = _compression(t.candidate or {})
        mine = architecture(t.candidate or {}) == architecture(new.candidate)  # its other recovery too: the same
        if mine or _key(shrink) in seen or float((t.metrics or {})["accuracy"]) <= accuracy:
            continue
        seen.add(_key(shrink))
        params = _params(space, Candidate(**{**want, **shrink}), measured)
        if params is not None:
            out.append(params)
        if len(out) == most:
            break
    return out


def instead(
    trials: list[TrialRecord], skipped: TrialRecord, space: SearchSpace, speed: str | None = None
) -> list[dict[str, Any]]:
    """The params of the skipped proposal's recipe on the fastest feasible architecture already built where that
    candidate is new to the study (none: [])."""
    if not skipped.budget_skip or skipped.sampled is None:
        return []
    want = recipe(skipped.sampled)
    measured, fastest = _measured(trials), _fastest_feasible(trials, speed)
    for t in fastest:
        shrink = _compression(t.sampled or t.candidate or {})
        candidate = Candidate(**{**want, **shrink})
        params = space.params_of(candidate)
        if params is not None and _key(candidate.to_dict()) not in measured:
            return [params]
    return []


def _measured(trials: list[TrialRecord]) -> set[str]:
    """The candidates the study built (as sampled: a promoted one was asked for with its short recovery)."""
    return {_key(Candidate.fill(t.sampled or t.candidate or {})) for t in trials if t.candidate is not None}


def _fastest_feasible(trials: list[TrialRecord], speed: str | None) -> list[TrialRecord]:
    """The feasible points the study measured (repeats left out), fastest first by its own speed figure."""
    return sorted(
        (t for t in trials if t.complete and t.candidate is not None and results.is_feasible(t) and not t.repeat),
        key=lambda t: results.cost_ms(t.metrics or {}, speed) or float("inf"),
    )


def _compression(c: dict[str, Any]) -> dict[str, Any]:
    """How a candidate's model was made smaller (its recovery included): the complement of ``recipe``."""
    return {k: v for k, v in Candidate.fill(c).items() if k in COMPRESSION}


def _params(space: SearchSpace, candidate: Candidate, measured: set[str]) -> dict[str, Any] | None:
    """``candidate`` as the space's params (None: the space cannot say it, or the study measured it already). A
    long recovery is asked for as the short one, which the study promotes again (its long one is cached)."""
    for option in (candidate, dataclasses.replace(candidate, recovery="short")):  # a space without `recovery`
        params = space.params_of(option)
        if params is not None:
            return None if _key(dataclasses.asdict(option)) in measured else params
    return None


def _key(c: dict[str, Any]) -> str:
    return json.dumps(c, sort_keys=True)
