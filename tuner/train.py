"""One training loop, used for the baseline (from labels), pruning recovery and students (distillation)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuner.dataset import Dataset, Split
from tuner.progress import Tracker

BATCH_SIZE = 64
TEMPERATURE = 4.0  # softens the teacher's logits so the student learns the dark knowledge
WARMUP = 0.05  # share of the steps spent ramping the learning rate up: a pruned model's first updates are its largest
SHIFT = 8  # random translation of up to 1/SHIFT of the side, per image: label-safe for any image class


def steps_per_epoch(data: Dataset, images: int | None = None) -> int:
    """Steps of one pass over the train split (or over ``images`` of it)."""
    return max(1, math.ceil((len(data.train) if images is None else images) / BATCH_SIZE))


def train(
    model: nn.Module,
    data: Dataset,
    steps: int,
    lr: float,
    seed: int = 0,
    teacher: nn.Module | None = None,
    augment: bool = True,
    on_epoch: Callable[[int], None] | None = None,
    after_step: Callable[[], None] | None = None,
    what: str = "training",
    pool: np.ndarray | None = None,
    check: Callable[[int], bool] | None = None,
    check_every: int = 0,
) -> list[float]:
    """Train ``model`` in place for ``steps`` AdamW steps on the train split (linear warm-up, then cosine);
    returns the loss of every step. ``pool``: the indices of the train images it may draw from (recovery keeps
    a slice apart to judge itself on); ``check(step)``, every ``check_every`` steps and after the last, with the
    model in eval mode, ends the training early when it returns True.

    With a ``teacher`` the loss is knowledge distillation (KL at TEMPERATURE) plus half the label loss, the
    usual recipe to recover a pruned network or train a smaller student. ``on_epoch(step)`` is called after
    each pass over the train split (and after the last step), with the model in eval mode; ``after_step()``
    after every optimizer step (recovery re-applies a sparsity mask there). ``what`` names the work in the
    progress lines a long training prints (``tuner.progress``).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.train()
    if teacher is not None:
        teacher.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, int(WARMUP * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
    )
    pool = np.arange(len(data.train)) if pool is None else pool
    n, epoch = len(pool), steps_per_epoch(data, len(pool))
    order = pool[rng.permutation(n)]
    pos = 0
    losses = []
    tracker = Tracker(what, steps)
    for step in range(steps):
        if pos + BATCH_SIZE > n:
            order, pos = pool[rng.permutation(n)], 0
        idx = np.sort(order[pos : pos + BATCH_SIZE])
        pos += BATCH_SIZE
        images = data.train.images[idx]
        if augment:
            images = shift(images, rng)
        x = torch.from_numpy(data.normalize(images))
        y = torch.from_numpy(data.train.labels[idx])
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / TEMPERATURE, dim=1)
            kd = F.kl_div(F.log_softmax(logits / TEMPERATURE, dim=1), soft, reduction="batchmean")
            loss = 0.5 * loss + kd * TEMPERATURE**2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step()
        tracker(step + 1)
        if on_epoch is not None and ((step + 1) % epoch == 0 or step + 1 == steps):
            model.eval()
            on_epoch(step + 1)
            model.train()
        if check is not None and ((check_every and (step + 1) % check_every == 0) or step + 1 == steps):
            model.eval()
            stop = check(step + 1)
            model.train()
            if stop:
                break
    model.eval()
    return losses


def shift(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved by its own random offset (up to a SHIFT-th of the side, both axes), the gap filled with
    the image's edge pixels rather than wrapped around: a random crop of a padded image."""
    n, _, h, w = images.shape
    pad = max(1, min(h, w) // SHIFT)
    padded = np.pad(images, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="edge")
    dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
    return np.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


@torch.no_grad()
def torch_accuracy(model: nn.Module, data: Dataset, batch_size: int = 256, split: Split | None = None) -> float:
    """Top-1 of an fp32 torch model on ``split``, by default the validation split (the reference every drop is
    against)."""
    model.eval()
    split = data.val if split is None else split
    correct = 0
    for x, y in data.batches(split, batch_size):
        correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    return correct / len(split)
