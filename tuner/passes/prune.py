"""Structured channel pruning with Torch-Pruning: the dependency graph keeps any topology consistent (residual
streams, depthwise convs, squeeze-excite), and a ratio *profile* decides how many channels each group keeps.

Profiles (``Candidate.prune_profile``), all removing channels by L2 group magnitude within a group:

* ``uniform`` — every group keeps ``1 - ratio`` of its channels.
* ``global`` — Torch-Pruning's global ranking: each group's channel importances are normalized by the group's
  mean, ranked together, and the lowest ``ratio`` of all channels go; a group keeps at least
  ``1 - MAX_GROUP_RATIO`` of its own, so that no layer collapses to a sliver the rest cannot route around.

Handled deliberately: the classifier's outputs (the classes) are never pruned; a residual stream (stem,
downsample and every block's last conv) is one group, pruned as a whole; a depthwise conv goes with the
channels it is fed; grouped convs keep equal groups (Torch-Pruning's channel groups). Every kept count is a
multiple of ``tuner.hardware.channel_multiple()`` (at least one; a group under two multiples wide is kept
exact): odd counts make a pruned model slower, not faster.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from tuner import hardware
from tuner.names import PRUNE_PROFILES as PROFILES

MAX_GROUP_RATIO = 0.9  # global profile: the most any one group loses


def output_layer(model: nn.Module, example: torch.Tensor) -> nn.Module | None:
    """The last conv/linear layer to run: its outputs are the classes and must stay whole."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return order[-1] if order else None


def prune(
    model: nn.Module, ratio: float, example: torch.Tensor, profile: str = "uniform", round_to: int | None = None
) -> nn.Module:
    """Remove channels of every prunable group, in place, as ``profile`` allots ``ratio``.

    Deterministic: the same weights, ratio and profile give the same architecture, which lets the cache
    store only the recovered state_dict and rebuild the structure by pruning again.
    """
    if ratio <= 0:
        return model
    if profile not in PROFILES:
        raise ValueError(f"prune_profile must be one of {', '.join(PROFILES)}, but got {profile!r}.")
    pruner = _pruner(model, example)
    _cut(pruner, _plan(pruner, ratio, profile, round_to or hardware.channel_multiple()))
    return model


def prune_to(model: nn.Module, example: torch.Tensor, state: dict[str, Tensor]) -> nn.Module:
    """Prune a freshly built ``model`` to the widths of a saved pruned ``state`` (whatever its own weights, so a
    state_dict alone rebuilds its module; the state's weights are loaded afterwards)."""
    pruner = _pruner(model, example)
    names = {m: n for n, m in model.named_modules()}
    plan = []
    for group, scores, ch_groups in _groups(pruner):
        saved = state.get(f"{names[group[0].dep.target.module]}.weight")
        kept = len(scores) if saved is None else int(saved.shape[0]) // ch_groups
        plan.append((group, -torch.arange(len(scores), dtype=torch.float32), ch_groups, kept))  # keep the first
    _cut(pruner, plan)
    return model


def _pruner(model: nn.Module, example: torch.Tensor) -> tp.pruner.BasePruner:
    """Torch-Pruning's dependency graph and importance over ``model``, its classifier left whole."""
    model.eval()
    head = output_layer(model, example)
    importance = tp.importance.GroupMagnitudeImportance(p=2)  # normalizer="mean": comparable across groups
    return tp.pruner.BasePruner(
        model, example, importance=importance, pruning_ratio=0.0, ignored_layers=[head] if head is not None else []
    )


def _cut(pruner: tp.pruner.BasePruner, plan: list[tuple[Any, Tensor, int, int]]) -> None:
    """Remove each group's weakest channels down to its planned count (ties by index: deterministic)."""
    for group, scores, ch_groups, kept in plan:
        if kept == len(scores):
            continue
        drop = torch.argsort(scores, stable=True)[: len(scores) - kept]
        width = len(scores)
        idxs = torch.cat([drop + g * width for g in range(ch_groups)]) if ch_groups > 1 else drop
        dep = group[0].dep
        pruner.DG.get_pruning_group(dep.target.module, dep.handler, sorted(idxs.tolist())).prune()


def _groups(pruner: tp.pruner.BasePruner) -> list[tuple[Any, Tensor, int]]:
    """Every prunable group with its channel importances (one per channel of a channel group) and channel groups."""
    found = []
    for group in pruner.DG.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        scores = pruner.estimate_importance(group)
        if scores is None:
            continue
        ch_groups = pruner._get_channel_groups(group)  # grouped convs: channels are pruned alike in every group
        found.append(
            (group, (scores.view(ch_groups, -1).mean(0) if ch_groups > 1 else scores).float().cpu(), ch_groups)
        )
    return found


def _plan(
    pruner: tp.pruner.BasePruner, ratio: float, profile: str, round_to: int
) -> list[tuple[Any, Tensor, int, int]]:
    """Each prunable group with its channel importances, its channel groups and the channels it keeps."""
    groups = _groups(pruner)
    if profile == "global":
        everything = torch.cat([s for _, s, _ in groups])
        cut = int(ratio * len(everything))
        threshold = torch.sort(everything).values[cut - 1] if cut > 0 else -math.inf
        wanted = [max(int((s > threshold).sum()), math.ceil(len(s) * (1 - MAX_GROUP_RATIO))) for _, s, _ in groups]
    else:
        wanted = [len(s) * (1 - ratio) for _, s, _ in groups]
    plan = []
    for (group, scores, ch_groups), want in zip(groups, wanted):
        width = len(scores)
        step = round_to if ch_groups == 1 and width >= 2 * round_to else 1  # too narrow to round: keep it exact
        plan.append((group, scores, ch_groups, min(width, max(step, step * round(want / step)))))
    return plan


def count(model: nn.Module, example: torch.Tensor) -> tuple[int, int]:
    """(MACs, parameters) of one sample through ``model``."""
    macs, params = tp.utils.count_ops_and_params(model, example[:1])
    return int(macs), int(params)
