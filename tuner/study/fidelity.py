"""Multi-fidelity recovery, the tuner's own rule (Optuna's pruners refuse multi-objective studies).

Every compressed candidate is first built with the short recovery. Its latency does not depend on how long it
was distilled (the architecture and precision are the same), so one short measurement says whether the long
recovery could matter: it is spent only on a candidate that missed the accuracy floor by at most
``PROMOTE_MARGIN`` and is faster than every feasible point so far, i.e. one that would become the study's
fastest feasible point if the long recovery made it feasible. The long recovery continues the short one and
is cached per architecture, so every later precision or placement of it reuses it. The two are rungs of a
successive halving in optimizer steps: the long one trains ``tuner.passes.recover.LONG_FACTOR`` times the short
one's steps in all, from where the short one ended.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tuner.candidate import Candidate

# How far below the accuracy floor a short recovery may land and still get the long one. Measured on
# imagenette/ResNet18 (benchmarks/HISTORY.md, recovery table): the long recovery adds 1-4 points over the short.
PROMOTE_MARGIN = 0.05


def can_promote(candidate: Candidate, floor: float | None) -> bool:
    """A short-recovery compressed candidate in a study with an accuracy floor."""
    return floor is not None and candidate.compresses and candidate.recovery == "short"


def screening_floor(floor: float) -> float:
    """The accuracy below which the short measurement stops early: not even the long recovery would reach the floor."""
    return floor - PROMOTE_MARGIN


def should_promote(metrics: dict[str, Any], floor: float, fastest_feasible_ms: float | None) -> bool:
    """Infeasible by accuracy but close, and faster than every feasible point so far."""
    close = floor - PROMOTE_MARGIN <= metrics["accuracy"] < floor
    return close and (fastest_feasible_ms is None or metrics["per_sample_ms"] < fastest_feasible_ms)


def promoted(candidate: Candidate) -> Candidate:
    return dataclasses.replace(candidate, recovery="long")
