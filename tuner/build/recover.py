"""Recovery: a short knowledge-distillation fine-tune of the pruned model against the unpruned one."""

from __future__ import annotations

from torch import nn

from tuner.data import Dataset
from tuner.train import train

LEARNING_RATE = 1e-3


def recover(student: nn.Module, teacher: nn.Module, data: Dataset, steps: int, seed: int = 0) -> nn.Module:
    if steps <= 0:
        return student
    return train(student, data, steps, lr=LEARNING_RATE, seed=seed, teacher=teacher)
