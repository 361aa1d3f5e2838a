"""The recovery budget in steps: the same whatever the train split's size (up to the cap a small split gets), an
early stop on a proxy kept out of the training, and the step budget in the cache key. Real distillation of the
tests' tiny CNN on digits."""

import copy
import dataclasses

import numpy as np
import pytest

from tuner.candidate import Candidate
from tuner.dataset import Split
from tuner.passes.compress import _key
from tuner.passes.prune import count, prune
from tuner.passes.recover import (
    LONG_FACTOR,
    MAX_EPOCHS,
    MIN_GAIN,
    MIN_STEPS,
    PATIENCE,
    budget_steps,
    proxy_loss,
    proxy_split,
    recover,
    removed_share,
)
from tuner.train import BATCH_SIZE


def _resized(data, n: int):
    """``data`` with a train split of ``n`` images (digits' own, repeated where it has fewer)."""
    idx = np.arange(n) % len(data.train)
    return dataclasses.replace(data, train=Split(data.train.images[idx], data.train.labels[idx]))


def _pruned(workload):
    import torch

    model = copy.deepcopy(workload.reference_model())
    example = torch.from_numpy(workload.data.example())
    ref_macs, _ = count(model, example)
    prune(model, 0.5, example)
    macs, _ = count(model, example)
    return model, removed_share(macs, ref_macs, 0.0)


def test_the_budget_follows_the_compute_removed_not_the_split():
    assert budget_steps(0.5, 10, "short", 300) == budget_steps(0.5, 10, "short", 3000) == 10
    assert budget_steps(0.5, 100, "short", 3000) == budget_steps(0.5, 100, "short", 50_000) == 100
    assert budget_steps(0.8, 100, "short", 50_000) > budget_steps(0.4, 100, "short", 50_000) >= MIN_STEPS
    assert budget_steps(0.4, 100, "long", 50_000) == LONG_FACTOR * budget_steps(0.4, 100, "short", 50_000)
    assert budget_steps(0.4, 0, "short", 3000) == 0
    tiny = budget_steps(0.5, 100, "short", 200)  # 200 images: never more than MAX_EPOCHS passes over them
    assert tiny * BATCH_SIZE <= MAX_EPOCHS * 200 + BATCH_SIZE


def test_the_proxy_is_a_seeded_slice_kept_out_of_training():
    pool, held = proxy_split(3000, seed=0)
    assert len(held) == 256 and len(pool) + len(held) == 3000 and not set(pool) & set(held)
    assert np.array_equal(held, proxy_split(3000, seed=0)[1]) and not np.array_equal(held, proxy_split(3000, 1)[1])
    assert len(proxy_split(300, 0)[1]) == 30 and len(proxy_split(5, 0)[1]) == 0  # too small to spare one


def test_a_recovery_takes_the_same_steps_on_300_and_3000_images(workload):
    """Same removed share, same budget, whatever the split: the step count does not grow with the data."""
    records = []
    for n in (300, 3000):
        data = _resized(workload.data, n)
        model, removed = _pruned(workload)
        budget = budget_steps(removed, 8, "short", len(data.train))
        records.append(recover(model, workload.reference_model(), data, removed, budget, "short"))
    small, large = records
    assert small.planned == large.planned == budget_steps(small.removed, 8, "short", 3000) > MIN_STEPS
    assert small.steps <= small.planned and large.steps <= large.planned
    assert small.seconds > 0 and large.seconds > 0 and small.proxy and large.proxy
    assert small.loss_end < small.loss_start and large.loss_end < large.loss_start


def test_early_stop_when_the_proxy_stops_improving(workload):
    """Labels shuffled (noise, as a mislabelled split has): the student fits the noise on the images it trains on,
    and its loss on the slice kept apart stops improving; the run ends before its budget, its best weights kept."""
    rng = np.random.default_rng(0)
    data = _resized(workload.data, 200)
    data = dataclasses.replace(data, train=Split(data.train.images, rng.permutation(data.train.labels)))
    teacher = workload.reference_model()
    model = copy.deepcopy(teacher)
    record = recover(model, teacher, data, 0.0, 200, "short")
    assert record.stopped == "plateau" and record.steps < record.planned == 200
    losses = [loss for _, loss, _ in record.proxy]
    best = min(losses)
    assert all(loss > (1 - MIN_GAIN) * best for loss in losses[-PATIENCE:])  # PATIENCE checks without a gain
    assert record.kept == record.proxy[losses.index(best)][0] < record.steps
    _, held = proxy_split(len(data.train), 0)
    assert proxy_loss(model, teacher, data, held)[0] == pytest.approx(best, rel=1e-3)  # the best weights, kept


def test_the_step_budget_is_in_the_cache_key():
    c = Candidate(prune_ratio=0.5)
    assert _key("m", c, (), "short", 0, 100) != _key("m", c, (), "short", 0, 200)
    assert _key("m", c, (), "short", 0, 100) == _key("m", c, (), "short", 0, 100)
