"""Structured channel pruning with Torch-Pruning (the dependency graph keeps any topology consistent)."""

from __future__ import annotations

import torch
import torch_pruning as tp
from torch import nn

ROUND_TO = 8  # keep channel counts multiples of 8: odd counts can make a pruned model slower


def output_layer(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The last conv/linear layer to run: its outputs are the classes and must stay whole."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: order.append(m))
             for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None


def prune(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    """Remove ``ratio`` of the channels of every prunable group, in place, by L2 magnitude.

    Deterministic: the same weights and ratio give the same architecture, which lets the
    cache store only the recovered state_dict and rebuild the structure by pruning again.
    """
    if ratio <= 0:
        return model
    model.eval()
    head = output_layer(model, example)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[head] if head is not None else [],
        round_to=ROUND_TO,
    )
    pruner.step()
    return model


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one sample through ``model``."""
    macs, params = tp.utils.count_ops_and_params(model, example[:1])
    return int(macs), int(params)
