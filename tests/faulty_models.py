"""User model files that misbehave at run time, for the trial-isolation tests: each is a small CNN that works
at batch 1 (so the workload loads and the baseline trains), and fails in one way at another batch size."""

from __future__ import annotations

import time

import torch
from torch import nn


class _Faulty(nn.Module):
    def __init__(self, num_classes: int, raise_at: int, hang_at: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, num_classes),
        )
        self.raise_at, self.hang_at = raise_at, hang_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and x.shape[0] == self.raise_at:
            raise ValueError(f"this model cannot take a batch of {self.raise_at}")
        if not self.training and x.shape[0] == self.hang_at:
            while True:  # a deadlock, as far as the tuner can tell
                time.sleep(1)
        return self.body(x)


def raises_at_8_hangs_at_32(num_classes: int = 10) -> nn.Module:
    return _Faulty(num_classes, raise_at=8, hang_at=32)
