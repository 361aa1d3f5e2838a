"""Recovery: a short knowledge-distillation fine-tune of the pruned model against the unpruned one."""

from __future__ import annotations

from torch import nn

from tuner.data import Dataset
from tuner.train import train


def learning_rate(ratio: float) -> float:
    """Gentle for light pruning, stronger for heavy: a converged model fine-tuned at a high rate loses
    accuracy it never had to lose. Measured on digits/ResNet18, 60 steps: at ratio 0.2, lr 1e-4 kept
    99.2% where 1e-3 fell to 97.8%; at 0.5, 1e-3 recovered 98.1% where 1e-4 reached 97.5%."""
    return min(1e-3, max(1e-4, 4e-3 * ratio**2))


def recover(student: nn.Module, teacher: nn.Module, data: Dataset, steps: int, ratio: float,
            seed: int = 0) -> nn.Module:
    if steps <= 0:
        return student
    return train(student, data, steps, lr=learning_rate(ratio), seed=seed, teacher=teacher)
