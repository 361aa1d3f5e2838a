"""Shallower students derived from the user's own model: blocks whose output has the shape of their input
(residual blocks with an identity shortcut, squeeze-excite gates, ...) replaced by the identity.

Which blocks go is measured, not guessed: each droppable block is replaced alone and the logits' error on
calibration images (never the validation split) is taken, relative to the model's own logits, as
``tuner.passes.sensitivity`` does for int8. ``drop_blocks: k`` removes the k blocks that matter least (nested
blocks are never counted twice); distillation then recovers the rest. The ranking is computed once per
model and cached; a block whose removal breaks the forward pass is simply not droppable.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from tuner.cache import code_id, make_key

if TYPE_CHECKING:
    from tuner.dataset import Dataset
    from tuner.workload import Workload

IMAGES = 128  # calibration images to rank on: a ranking, not an accuracy
FILE = "blocks.json"


@dataclass(frozen=True)
class Block:
    name: str  # the module's qualified name in the model
    error: float  # mean squared logit error / mean squared logit, this block alone replaced by the identity
    agreement: float  # share of the images whose top-1 class is unchanged


def droppable(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Submodules (not leaves, not the model) called once per forward with one tensor whose output has its shape."""
    calls: dict[str, list[bool]] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple, output: object) -> None:
            same = (
                len(args) == 1
                and isinstance(args[0], torch.Tensor)
                and isinstance(output, torch.Tensor)
                and output.shape == args[0].shape
                and output.dtype == args[0].dtype
            )
            calls.setdefault(name, []).append(same)

        return record

    handles = [
        m.register_forward_hook(hook(name))
        for name, m in model.named_modules()
        if name and any(True for _ in m.children())
    ]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return [name for name, seen in calls.items() if seen == [True]]


def most_droppable(model: nn.Module, example: torch.Tensor) -> int:
    """The most blocks ``drop_blocks`` can take from ``model`` (droppable and not nested in one another): the
    space's ``drop_blocks`` is capped to it at start, so a model without such blocks is never asked for them."""
    return len(choose([Block(name, 0.0, 1.0) for name in droppable(model, example)], 1 << 30))


def measure_blocks(model: nn.Module, data: Dataset) -> list[Block]:
    """Every droppable block, least harmful to drop first (ties by name: deterministic)."""
    x = torch.from_numpy(data.normalize(data.calib.images[:IMAGES]))
    model = model.eval()
    with torch.no_grad():
        reference = model(x)
        scale = float(reference.pow(2).mean()) or 1.0
        blocks = []
        for name in droppable(model, x[:2]):
            trial = drop(copy.deepcopy(model), (name,))
            try:
                logits = trial(x)
            except Exception:  # noqa: BLE001 - the identity does not fit where this block sat: not droppable
                continue
            if logits.shape != reference.shape:
                continue
            blocks.append(
                Block(
                    name,
                    float((logits - reference).pow(2).mean()) / scale,
                    float((logits.argmax(1) == reference.argmax(1)).float().mean()),
                )
            )
    return sorted(blocks, key=lambda b: (b.error, b.name))


def ranking(w: Workload, model: nn.Module, model_key: str) -> list[Block]:
    """``measure_blocks`` of ``model`` (whose content key is ``model_key``), cached."""
    key = make_key(
        stage="blocks",
        input=model_key,
        calib=w.data.fingerprint,
        images=IMAGES,
        torch=torch.__version__,
        code=code_id("tuner.passes.student"),
    )
    entry = w.cache.entry(
        key, lambda d: (d / FILE).write_text(json.dumps([asdict(b) for b in measure_blocks(model, w.data)], indent=1))
    )
    return [Block(**row) for row in json.loads((entry / FILE).read_text())]


def choose(blocks: list[Block], k: int) -> tuple[str, ...]:
    """The ``k`` least harmful blocks, skipping any inside (or around) one already chosen."""
    chosen: list[str] = []
    for b in blocks:
        if len(chosen) == k:
            break
        if not any(_nested(b.name, c) for c in chosen):
            chosen.append(b.name)
    return tuple(chosen)


def drop(model: nn.Module, names: tuple[str, ...]) -> nn.Module:
    """``model`` with each named submodule replaced by the identity, in place."""
    for name in names:
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())
    return model


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")
