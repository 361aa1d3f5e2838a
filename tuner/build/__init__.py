"""Build one candidate: prune -> recover -> fold -> the artifact its placement runs, each step cached by content.

``build`` never sees Optuna and never measures; it returns a ``Built`` that ``tuner.measure`` opens. The
artifact is made by the step registered for its kind (``ARTIFACT_STEPS``): a new kind (an OpenVINO IR, a
TensorRT engine) is one step function plus one line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch_pruning
from torch import nn

from tuner import runtimes
from tuner.build.export import onnx_fp32_step
from tuner.build.fuse import fold_bn
from tuner.build.prune import count, prune
from tuner.build.quantize import cast_torch, fp16_step, int8_step, torch_step
from tuner.build.recover import learning_rate, recover
from tuner.build.step import ArtifactStep, StepContext
from tuner.cache import code_id, make_key
from tuner.candidate import Candidate
from tuner.names import ONNX_FP16, ONNX_FP32, ONNX_INT8, TORCH_MODULE, artifact_kind
from tuner.workload import Workload


@dataclass
class Built:
    candidate: Candidate
    model: nn.Module | None  # the torch module, for torch placements
    onnx_path: Path | None  # the ONNX file, for ONNX Runtime and OpenVINO placements
    macs: int  # per sample
    params: int
    artifact_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per build step
    float_layers: tuple[str, ...] = ()  # int8: layers kept in float by sensitivity (tuner.build.sensitivity)

    @property
    def artifact_mb(self) -> float:
        return self.artifact_bytes / 2**20


ARTIFACT_STEPS: dict[str, ArtifactStep] = {
    TORCH_MODULE: torch_step,
    ONNX_FP32: onnx_fp32_step,
    ONNX_INT8: int8_step,
    ONNX_FP16: fp16_step,
}


def build(w: Workload, c: Candidate) -> Built:
    runtimes.check_supported(c)  # refuse before any work
    ctx = StepContext(w, c, torch.from_numpy(w.data.example(1)), {})
    model, key = _pruned_and_recovered(ctx)
    macs, params = count(model, ctx.example)
    if c.fold_bn:
        with ctx.timed("fuse"):
            model = fold_bn(model)
    out = ARTIFACT_STEPS[artifact_kind(c.placement, c.precision)](ctx, model, key)
    if out.model is not None:
        size = sum(t.numel() * t.element_size() for t in out.model.state_dict().values())
    else:
        assert out.path is not None
        size = out.path.stat().st_size
    return Built(c, out.model, out.path, macs, params, size, ctx.seconds, out.float_layers)


def rebuild_module(model: nn.Module, c: Candidate, example: torch.Tensor, state: dict[str, torch.Tensor]) -> nn.Module:
    """A torch candidate's module from its saved state_dict: ``model`` (freshly built, any weights) shaped as
    ``build`` shapes it (prune, fold, cast), then the saved weights loaded. Pruning keeps the same number of
    channels per group whatever the weights, so the shapes match the saved ones."""
    prune(model.eval(), c.prune_ratio, example)
    if c.fold_bn:
        model = fold_bn(model)
    module = cast_torch(model, c.precision)
    module.load_state_dict(state)
    return module.eval()


def _pruned_and_recovered(ctx: StepContext) -> tuple[nn.Module, str]:
    """The reference model pruned at the candidate's ratio and recovered; the fine-tune is cached by content."""
    w, ratio = ctx.workload, ctx.candidate.prune_ratio
    model = w.reference_model()
    if ratio == 0:
        return model, w.key
    with ctx.timed("prune"):
        prune(model, ratio, ctx.example)  # deterministic: rebuilds the cached entry's architecture
    key = make_key(stage="prune", input=w.key, ratio=round(ratio, 6), steps=w.spec.recover_steps,
                   lr=learning_rate(ratio), seed=w.spec.seed, tp=torch_pruning.__version__, torch=torch.__version__,
                   code=code_id("tuner.build.prune", "tuner.build.recover", "tuner.train"))

    def fine_tune(out: Path) -> None:
        recover(model, w.reference_model(), w.data, w.spec.recover_steps, ratio, w.spec.seed)
        torch.save(model.state_dict(), out / "weights.pt")

    with ctx.timed("recover"):
        entry = w.cache.entry(key, fine_tune)
        model.load_state_dict(torch.load(entry / "weights.pt", map_location="cpu", weights_only=True))
    return model.eval(), key
