"""Small models for tests, built as a user's module:callable would be (``num_classes=``).

``mobile_net`` has what a ResNet does not: depthwise convs, squeeze-excite, hardswish / SiLU
and a residual add, so pruning, folding and quantizing are proven beyond ResNets.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // 4, 1)
        self.fc2 = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, channels: int, expand: int = 2):
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()
        )
        self.se = SqueezeExcite(hidden)
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class MobileNet(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(InvertedResidual(width), InvertedResidual(width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


def mobile_net(num_classes: int = 10) -> nn.Module:
    return MobileNet(num_classes)


def narrow_mobile_net(num_classes: int = 10) -> nn.Module:
    """``mobile_net`` at half the width: a user's own student for it (``--student``)."""
    return MobileNet(num_classes, width=16)


def conv_net(num_classes: int = 10) -> nn.Module:
    """A plain small CNN: fast to train, for end-to-end CLI and study tests."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 1, 1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, 1, 1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4, num_classes),
    )


class SlowToTrain(nn.Sequential):
    """A training step takes 50 ms an image (inference runs at full speed): the time budget prices a recovery of it
    at minutes, while its accuracy and latency are measured as quickly as the tiny CNN's. Give it --weights: its
    own baseline training would take minutes too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            import time

            time.sleep(0.05 * x.shape[0])
        return super().forward(x)


def slow_to_train_net(num_classes: int = 10) -> nn.Module:
    return SlowToTrain(*conv_net(num_classes))


def not_a_model(num_classes: int = 10) -> str:
    return "nope"


def crashing_net(num_classes: int = 10) -> nn.Module:
    """Kills its own process when run with a batch of 8: a stand-in for a segfaulting kernel."""

    class Crash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = conv_net(num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] == 8 and not torch.jit.is_tracing() and not self.training:
                import os
                import signal

                os.kill(os.getpid(), signal.SIGSEGV)
            return self.net(x)

    return Crash()


class BranchyNet(nn.Module):
    """The small CNN behind a branch on the input's values: torch.fx cannot trace it (data-dependent control
    flow), so a module of it given in memory is saved whole, its class being importable from this file."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.net = conv_net(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() == 0:  # an all-zero batch: no image at all
            return torch.zeros(x.shape[0], self.net[-1].out_features)
        return self.net(x)
