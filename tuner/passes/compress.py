"""The model made smaller before any precision is chosen: the user's own student in its place (--student), blocks
dropped (a shallower student), channels pruned (narrower, by a ratio profile), weights sparsified, then distilled
back from the user's model for the candidate's recovery fidelity. Cached by content; one recovered model serves
every precision and placement.

A cached entry holds only the recovered state_dict and its ``RecoveryRecord``: ``reshape`` rebuilds the module
from the state's own shapes (blocks absent from it are dropped, groups pruned to its widths), so the same code
rebuilds a cached model, an exported state_dict and a model trained on another machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch_pruning
from torch import nn

from tuner import hardware
from tuner.cache import code_id, make_key
from tuner.errors import UnsupportedCombination
from tuner.passes import sparsify, student
from tuner.passes.prune import count, output_layer, prune, prune_to
from tuner.passes.recover import RecoveryRecord, budget_steps, recover, removed_share

if TYPE_CHECKING:
    from tuner.candidate import Candidate
    from tuner.passes.step import StepContext

WEIGHTS, RECORD = "weights.pt", "recovery.json"


@dataclass(frozen=True)
class Compressed:
    model: nn.Module
    key: str  # content key of the recovered weights: the input of every later step's key
    dropped: tuple[str, ...] = ()  # blocks replaced by the identity
    recovery: RecoveryRecord | None = None  # None: nothing was compressed, nothing recovered


def compress(ctx: StepContext) -> Compressed:
    """The reference model compressed as the candidate says and recovered at its fidelity (cached)."""
    w, c = ctx.workload, ctx.candidate
    if not c.compresses:
        return Compressed(w.reference_model(), w.key)
    model, start_key = w.start_model(c.student)
    dropped: tuple[str, ...] = ()
    if c.drop_blocks:
        with ctx.timed("student"):
            blocks = student.ranking(w, model, start_key)
            dropped = student.choose(blocks, c.drop_blocks)
        if len(dropped) < c.drop_blocks:
            raise UnsupportedCombination(
                f"drop_blocks {c.drop_blocks} is refused: this model has {len(dropped)} "
                "blocks whose output has their input's shape (droppable ones)"
            )
    short = _key(start_key, c, dropped, "short", w.spec.seed, w.spec.recover_steps)
    entry = short_entry = w.cache.entry(short, lambda out: _recover(ctx, out, dropped, "short"))
    key = short
    if c.recovery == "long":  # continues the short recovery: the short one is built (or found) first
        key = make_key(
            stage="recover-long",
            input=short,
            steps=w.spec.recover_steps,
            seed=w.spec.seed,
            code=code_id("tuner.passes.recover", "tuner.train"),
        )
        entry = w.cache.entry(key, lambda out: _recover(ctx, out, dropped, "long", warm=short_entry))
    with ctx.timed("recover"):
        state = torch.load(entry / WEIGHTS, map_location="cpu", weights_only=True)
        model = reshape(w.start_model(c.student)[0], c, ctx.example, state)
        model.load_state_dict(state)
    record = RecoveryRecord(**json.loads((entry / RECORD).read_text()))
    return Compressed(model.eval(), key, dropped, record)


def reshape(model: nn.Module, c: Candidate, example: torch.Tensor, state: dict[str, torch.Tensor]) -> nn.Module:
    """A freshly built ``model`` (the user's student where ``c.student``) given the architecture of a saved
    compressed ``state``: each droppable block with none of its tensors in the state replaced by the identity,
    every group pruned to the state's widths."""
    if c.drop_blocks:
        gone = [
            n
            for n in student.droppable(model, example)
            if not any(k.startswith(n + ".") for k in state) and any(True for _ in model.get_submodule(n).state_dict())
        ]
        student.drop(model, student.choose([student.Block(n, 0.0, 1.0) for n in sorted(gone)], len(gone)))
    if c.prune_ratio:
        prune_to(model, example, state)
    return model


def _key(model_key: str, c: Candidate, dropped: tuple[str, ...], fidelity: str, seed: int, steps: int) -> str:
    return make_key(
        stage="compress",
        input=model_key,
        dropped=list(dropped),
        ratio=c.prune_ratio,
        profile=c.prune_profile if c.prune_ratio else None,
        multiple=hardware.channel_multiple(),
        sparsity=c.sparsity,
        fidelity=fidelity,
        steps=steps,
        seed=seed,
        tp=torch_pruning.__version__,
        torch=torch.__version__,
        code=code_id(
            "tuner.passes.prune", "tuner.passes.student", "tuner.passes.sparsify", "tuner.passes.recover", "tuner.train"
        ),
    )


def _recover(ctx: StepContext, out: Path, dropped: tuple[str, ...], fidelity: str, warm: Path | None = None) -> None:
    """Build the compressed model (or load the short recovery to continue from) and distil it, into ``out``."""
    w, c = ctx.workload, ctx.candidate
    reference = w.reference_model()
    ref_macs, _ = count(reference, ctx.example)
    before = 0
    with ctx.timed("prune"):
        if warm is not None:
            state = torch.load(warm / WEIGHTS, map_location="cpu", weights_only=True)
            model = reshape(w.start_model(c.student)[0], c, ctx.example, state)
            model.load_state_dict(state)
            short = json.loads((warm / RECORD).read_text())
            before = short["before"] + short["steps"]
        else:
            model = student.drop(w.start_model(c.student)[0], dropped)
            if c.prune_ratio:
                prune(model, c.prune_ratio, ctx.example, c.prune_profile)
        keep = sparsify.masks(model, c.sparsity, output_layer(model, ctx.example)) if c.sparsity else {}
        sparsify.apply(model, keep)
        macs, _ = count(model, ctx.example)
    with ctx.timed("recover"):
        removed = removed_share(macs, ref_macs, c.sparsity)
        # a fresh student (--student) keeps none of the teacher's weights: budgeted as if all compute were removed
        budget = budget_steps(1.0 if c.student else removed, w.spec.recover_steps, fidelity, len(w.data.train))
        record = recover(
            model,
            reference,
            w.data,
            removed,
            budget,
            fidelity,
            w.spec.seed,
            before,
            fresh=c.student,
            after_step=(lambda: sparsify.apply(model, keep)) if keep else None,
        )
    torch.save(model.state_dict(), out / WEIGHTS)
    (out / RECORD).write_text(json.dumps(record.to_dict(), indent=1))


def describe(compressed: Compressed) -> dict[str, Any]:
    """What a measurement records of the compression."""
    return {
        "dropped_blocks": list(compressed.dropped),
        "recovery": compressed.recovery.to_dict() if compressed.recovery else None,
    }
