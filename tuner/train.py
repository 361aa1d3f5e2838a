"""One short training loop, used twice: the baseline (from labels) and pruning recovery (distillation)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuner.data import Dataset

BATCH_SIZE = 64
TEMPERATURE = 4.0  # softens the teacher's logits so the student learns the dark knowledge


def train(model: nn.Module, data: Dataset, steps: int, lr: float, seed: int = 0,
          teacher: nn.Module | None = None, augment: bool = True) -> nn.Module:
    """Train ``model`` in place for ``steps`` SGD steps on the train split (cosine LR, AdamW).

    With a ``teacher`` the loss is knowledge distillation (KL at TEMPERATURE) plus half the
    label loss, the usual recipe to recover a pruned network in few steps.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model.train()
    if teacher is not None:
        teacher.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    n = len(data.train)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + BATCH_SIZE > n:
            order, pos = rng.permutation(n), 0
        idx = np.sort(order[pos:pos + BATCH_SIZE])
        pos += BATCH_SIZE
        images = data.train.images[idx]
        if augment:  # random horizontal shift: cheap, safe for any image class
            images = np.roll(images, int(rng.integers(-2, 3)), axis=3)
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
    model.eval()
    return model


@torch.no_grad()
def torch_accuracy(model: nn.Module, data: Dataset, batch_size: int = 256) -> float:
    """Top-1 of an fp32 torch model on the validation split (the reference every drop is against)."""
    model.eval()
    correct = 0
    for x, y in data.batches(data.val, batch_size):
        correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
    return correct / len(data.val)
