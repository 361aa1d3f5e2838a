"""Recovery: a knowledge-distillation fine-tune of a compressed model (pruned, shallower, sparse) against the
user's model, with a budget in epochs over the train split that grows with the compute removed.

Two fidelities (``Candidate.recovery``): ``short`` is what every new architecture gets; ``long`` continues
the short run (warm start, ``LONG_FACTOR`` times its epochs in all) and is spent only on candidates that could
reach the front (``tuner.study.fidelity``). Each is cached by content, so one recovered model serves every
precision, placement and batch size. The record says whether the student had matched its teacher on the train
split by the end (a distillation loss still falling means it had not); whether more epochs would buy validation
accuracy is another question, which the recovery table in benchmarks/HISTORY.md measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import nn

from tuner.data import Dataset
from tuner.train import steps_per_epoch, train
from tuner.workload import BASELINE_LR

LONG_FACTOR = 4  # the long recovery trains this many times the short one's epochs, in all
MIN_EPOCHS = 0.5  # below this a light compression is still not re-fitted to its teacher
STILL_IMPROVING = 0.02  # the loss of the last fifth of the run this much below the fifth before: stopped early


def removed_share(macs: int, reference_macs: int, sparsity: float) -> float:
    """How much of the model's compute the compression took away (sparsity counts as the zeros it made)."""
    return 1.0 - (macs / max(1, reference_macs)) * (1.0 - sparsity)


def budget_epochs(removed: float, base_epochs: float, fidelity: str) -> float:
    """``base_epochs`` for a model with half its compute removed, in proportion to what was removed; the long
    fidelity ``LONG_FACTOR`` times that."""
    short = max(MIN_EPOCHS, base_epochs * removed / 0.5) if base_epochs > 0 else 0.0
    return short * (LONG_FACTOR if fidelity == "long" else 1)


def learning_rate(removed: float) -> float:
    """Gentle for light compression, stronger for heavy: a converged model fine-tuned at a high rate loses
    accuracy it never had to lose. ``r`` is the uniform channel ratio that removes as much compute. Measured on
    digits/ResNet18, 60 steps: at r 0.2, lr 1e-4 kept 99.2% where 1e-3 fell to 97.8%; at 0.5, 1e-3 recovered
    98.1% where 1e-4 reached 97.5%. On imagenette/ResNet18 at 128 px (teacher 76.5%), r 0.2, 1.5 epochs: 1.6e-4
    reached 74.5%, 3e-4 75.5%, 6.4e-4 75.6%; r 0.4, 2 epochs: 6.4e-4 76.3%, 2e-3 74.8%. Hence the floor of 3e-4."""
    r = 1.0 - math.sqrt(max(0.0, 1.0 - removed))
    return min(1e-3, max(3e-4, 4e-3 * r**2))


@dataclass(frozen=True)
class RecoveryRecord:
    """What a recovery did, kept beside its weights and in every trial built from them."""

    fidelity: str
    epochs: float  # passes over the train split, this fidelity in all
    steps: int
    removed: float  # share of the compute the compression removed
    lr: float
    loss_start: float  # mean distillation loss of the run's first tenth
    loss_end: float  # ... and of its last tenth
    still_improving: bool  # the train loss was still falling at the end: the student had not matched its teacher
    fresh: bool = False  # the student did not start from the teacher's weights (--student): budgeted as all removed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def recover(student: nn.Module, teacher: nn.Module, data: Dataset, removed: float, base_epochs: float,
            fidelity: str, seed: int = 0, already: float = 0.0,
            after_step: Callable[[], None] | None = None, fresh: bool = False) -> RecoveryRecord:
    """Distil ``teacher`` into ``student`` in place for this fidelity's budget; ``already`` epochs were trained
    before (the long fidelity continues the short one). A ``fresh`` student keeps none of the teacher's weights:
    its budget is that of a model with all its compute removed, whatever its size, at the baseline's rate."""
    epochs = budget_epochs(1.0 if fresh else removed, base_epochs, fidelity)
    steps = max(0, math.ceil((epochs - already) * steps_per_epoch(data)))
    lr = BASELINE_LR if fresh else learning_rate(removed)  # fresh: trained as a baseline is, from its initial weights
    lr *= 0.5 if already else 1.0  # a warm restart: the model is near its optimum
    losses = train(student, data, steps, lr=lr, seed=seed + int(already * 1000), teacher=teacher,
                   after_step=after_step, what=f"{fidelity} recovery ({removed:.0%} of the compute removed)") \
        if steps else []
    tenth, fifth = max(1, len(losses) // 10), max(1, len(losses) // 5)
    last, before = losses[-fifth:], losses[-2 * fifth:-fifth]
    improving = bool(before) and float(np.mean(last)) < (1 - STILL_IMPROVING) * float(np.mean(before))
    return RecoveryRecord(fidelity, epochs, steps, removed, lr, float(np.mean(losses[:tenth])) if losses else 0.0,
                          float(np.mean(losses[-tenth:])) if losses else 0.0, improving, fresh)
