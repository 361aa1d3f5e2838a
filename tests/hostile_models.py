"""Model builders a hostile (or careless) user brings, for tests/test_hostile.py: each breaks one rule of the
model contract (``builder(num_classes=N)`` returns a module whose ``forward(x)`` maps one (batch, 3, H, W) tensor
to (batch, N) logits) and must be refused in one line when the workload loads."""

from __future__ import annotations

import sys

import torch
from torch import nn

from tests.tiny_models import conv_net


class _Wrap(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.net = conv_net(num_classes)


class TwoInputs(_Wrap):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x * mask)


class TupleOutput(_Wrap):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, logits.detach()


class ExtraAxis(_Wrap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return torch.stack([logits, logits], dim=-1)  # (batch, classes, 2)


class ExitsInForward(_Wrap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.exit("forward gave up")


class RaisesInForward(_Wrap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model only takes 224 px")


class AuxInTraining(_Wrap):
    """Returns (logits, aux) in training mode only, as inception-style models do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return (logits, logits) if self.training else logits


def two_inputs(num_classes: int = 10) -> nn.Module:
    return TwoInputs(num_classes)


def tuple_output(num_classes: int = 10) -> nn.Module:
    return TupleOutput(num_classes)


def extra_axis(num_classes: int = 10) -> nn.Module:
    return ExtraAxis(num_classes)


def fixed_classes(num_classes: int = 10) -> nn.Module:
    return conv_net(5)  # ignores num_classes


def exits_in_builder(num_classes: int = 10) -> nn.Module:
    sys.exit(3)


def exits_in_forward(num_classes: int = 10) -> nn.Module:
    return ExitsInForward(num_classes)


def raises_in_builder(num_classes: int = 10) -> nn.Module:
    raise RuntimeError("CUDA is required to build this model")


def raises_in_forward(num_classes: int = 10) -> nn.Module:
    return RaisesInForward(num_classes)


def aux_in_training(num_classes: int = 10) -> nn.Module:
    return AuxInTraining(num_classes)


def no_num_classes() -> nn.Module:
    return conv_net(10)
