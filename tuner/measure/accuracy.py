"""Top-1 accuracy of a runtime session over the whole validation split, batched."""

from __future__ import annotations

from tuner.data import Dataset
from tuner.runtimes.base import Session


def top1(session: Session, data: Dataset, batch_size: int) -> float:
    correct = 0
    for x, y in data.batches(data.val, batch_size):
        correct += int((session.predict(x).argmax(axis=1) == y).sum())
    return correct / len(data.val)
