"""Top-1 accuracy of a runtime session over a whole split (the validation split by default), batched."""

from __future__ import annotations

import numpy as np

from tuner.dataset import Dataset, Split
from tuner.errors import HopelessCandidate
from tuner.guardrails import Tally
from tuner.runtimes.base import Session


def top1(
    session: Session,
    data: Dataset,
    batch_size: int,
    min_accuracy: float | None = None,
    split: Split | None = None,
    keep: list[np.ndarray] | None = None,
    tally: Tally | None = None,
) -> float:
    """Top-1 over ``split`` (the validation split); with ``min_accuracy``, stop as soon as even a perfect rest
    of the split could not reach it (Optuna's pruners refuse multi-objective studies: this is ours).
    ``keep`` collects each batch's logits (for a metric of the user's, scored by the study's process); ``tally``
    each batch's predictions (``tuner.guardrails``), and stops as soon as they already break its limits."""
    split = data.val if split is None else split
    correct, seen, total = 0, 0, len(split)
    for x, y in data.batches(split, batch_size):
        logits = session.predict(x)
        if keep is not None:
            keep.append(logits)
        correct += int((logits.argmax(axis=1) == y).sum())
        seen += len(y)
        broken = tally.add(logits, y) if tally is not None else None
        if broken:
            raise HopelessCandidate(broken)
        if min_accuracy is not None and (correct + total - seen) / total < min_accuracy:
            raise HopelessCandidate(
                f"stopped after {seen} of {total} validation images: at most "
                f"{(correct + total - seen) / total:.2%}, below the {min_accuracy:.2%} required"
            )
    return correct / total
