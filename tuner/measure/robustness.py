"""Top-1 on the corruption set (``tuner.corruptions``): overall and per corruption, in the session a trial already
opened; stopped as soon as the errors so far already put it below ``min_accuracy`` (errors only accumulate, so a
partial count bounds the whole: a ``max`` on ``corruption_drop`` can stop a trial early)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tuner.corruptions import Corrupted
from tuner.dataset import Dataset
from tuner.errors import HopelessCandidate
from tuner.runtimes.base import Session


def corruption_top1(
    session: Session, data: Dataset, corrupted: Corrupted, batch_size: int, min_accuracy: float | None = None
) -> dict[str, Any]:
    """``corruption_accuracy`` (0..1, over every corrupted image), ``corruption_by_kind`` (each corruption's top-1),
    ``corruption_images`` and ``corruption_seconds`` (the pass's wall time: what corruptions cost per trial)."""
    start = time.perf_counter()
    kinds = len(corrupted.kinds)
    right = np.zeros(kinds, np.int64)
    total, seen = len(corrupted.split), 0
    for x, y in data.batches(corrupted.split, batch_size):
        hit = session.predict(x).argmax(axis=1) == y
        right += np.bincount(corrupted.kind_of(slice(seen, seen + len(y))), weights=hit, minlength=kinds).astype(
            np.int64
        )
        seen += len(y)
        at_most = (int(right.sum()) + total - seen) / total
        if min_accuracy is not None and at_most < min_accuracy:
            raise HopelessCandidate(
                f"stopped after {seen} of {total} corrupted images: corruption top-1 at most "
                f"{at_most:.2%}, below the {min_accuracy:.2%} required"
            )
    return {
        "corruption_accuracy": float(right.sum()) / total,
        "corruption_by_kind": {k: round(float(r) / corrupted.per_kind, 6) for k, r in zip(corrupted.kinds, right)},
        "corruption_images": total,
        "corruption_seconds": time.perf_counter() - start,
    }
