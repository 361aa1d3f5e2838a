"""Trials for studies made in a test, recorded the way ``tuner.study.loop.Objective`` records a measured trial
(``tuner.study.storage.write_measured``: the figures and each constraint through ``Trial.set_constraint``), so
that what the readers are tested on is what production writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from tuner.objectives import Constraint
from tuner.study.storage import write_measured


def add_measured(
    study: optuna.Study,
    values: Sequence[float],
    metrics: dict[str, Any],
    candidate: dict[str, Any],
    constraints: Sequence[Constraint] = (),
    **attrs: Any,
) -> None:
    """Add one completed trial: its values, the candidate as the loop records it (``attrs``: baseline=True,
    duplicate_of=N...), and its metrics and constraints through the loop's own writer."""
    trial = optuna.trial.create_trial(
        values=list(values), user_attrs={"sampled": candidate, "candidate": candidate, **attrs}
    )
    write_measured(trial, metrics, constraints)
    study.add_trial(trial)
