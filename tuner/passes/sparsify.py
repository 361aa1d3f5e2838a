"""Unstructured weight sparsity: the smallest-magnitude weights of every conv and linear layer (the classifier
excepted) set to zero, the same share in each layer, and kept at zero through recovery.

The zeros stay in the dense tensors: no runtime on a CPU without sparse conv kernels runs them faster (the
study measures that, it does not assume it), but they compress: ``size_mb`` is the artifact as stored,
``compressed_mb`` as shipped (deflated), which is where sparsity pays.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import nn

LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def masks(model: nn.Module, sparsity: float, keep_whole: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Per weight (by parameter name): True where the weight stays. Magnitude within each layer, ties by position."""
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, LAYERS) or module is keep_whole:
            continue
        w = module.weight.detach().abs().flatten()
        n_zero = int(sparsity * w.numel())
        keep = torch.ones_like(w, dtype=torch.bool)
        keep[torch.argsort(w, stable=True)[:n_zero]] = False
        found[f"{name}.weight" if name else "weight"] = keep.view_as(module.weight)
    return found


def apply(model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Zero every masked weight, in place (after each optimizer step of recovery, too)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in keep.items():
            params[name].mul_(m)


def measured_sparsity(model: nn.Module) -> float:
    """The share of exact zeros among the conv and linear weights, as built."""
    zeros = total = 0
    for module in model.modules():
        if isinstance(module, LAYERS):
            zeros += int((module.weight == 0).sum())
            total += module.weight.numel()
    return zeros / total if total else 0.0


def compressed_bytes(path: Path | None, state: dict[str, torch.Tensor] | None = None) -> int:
    """The artifact's size deflated (zlib level 6, as a zip file stores it): what shipping it costs."""
    if path is not None:
        return len(zlib.compress(path.read_bytes(), 6))
    assert state is not None
    return sum(
        len(zlib.compress(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes(), 6))
        for t in state.values()
    )
