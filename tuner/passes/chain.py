"""The chain of passes that builds one candidate: compress (drop blocks, prune, sparsify) -> recover -> fold -> the artifact its placement
runs, each step cached by content.

``build`` never sees Optuna and never measures; it returns a ``Built`` that ``tuner.measure`` opens. The
artifact is made by the step registered for its kind (``ARTIFACT_STEPS``): a new kind (an OpenVINO IR, a
TensorRT engine) is one step function plus one line there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tuner.candidate import Candidate
from tuner.names import ONNX_FP16, ONNX_FP32, ONNX_INT8, TORCH_MODULE, artifact_kind
from tuner.passes.compress import compress, describe, reshape
from tuner.passes.fuse import fold_bn
from tuner.passes.onnx_export import onnx_fp32_step
from tuner.passes.prune import count
from tuner.passes.quantize import cast_torch, fp16_step, int8_step, torch_step
from tuner.passes.sparsify import compressed_bytes
from tuner.passes.step import ArtifactStep, StepContext
from tuner.runtimes.registry import check_supported
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
    float_layers: tuple[str, ...] = ()  # int8: layers kept in float by sensitivity (tuner.passes.sensitivity)
    compressed_bytes: int = 0  # the artifact deflated: what shipping it costs (0: not computed)
    compression: dict[str, Any] = field(default_factory=dict)  # dropped blocks and the recovery record

    @property
    def artifact_mb(self) -> float:
        return self.artifact_bytes / 2**20

    @property
    def compressed_mb(self) -> float:
        return self.compressed_bytes / 2**20


ARTIFACT_STEPS: dict[str, ArtifactStep] = {
    TORCH_MODULE: torch_step,
    ONNX_FP32: onnx_fp32_step,
    ONNX_INT8: int8_step,
    ONNX_FP16: fp16_step,
}


def build(w: Workload, c: Candidate) -> Built:
    check_supported(c)  # refuse before any work
    ctx = StepContext(w, c, torch.from_numpy(w.data.example(1)), {})
    model: nn.Module | None = None
    if w.onnx is not None:  # an ONNX file: no torch graph; its artifact steps start from the file (onnx_fp32_step)
        c.check_without_torch_graph(w.spec.model)
        key, macs, params, compression = w.key, w.onnx.macs, w.onnx.params, {}
    else:
        small = compress(ctx)
        model, key, compression = small.model, small.key, describe(small)
        macs, params = count(model, ctx.example)
    if model is not None and c.fold_bn:
        with ctx.timed("fuse"):
            model = fold_bn(model)
    out = ARTIFACT_STEPS[artifact_kind(c.placement, c.precision)](ctx, model, key)
    if out.model is not None:
        state = out.model.state_dict()
        size, packed = sum(t.numel() * t.element_size() for t in state.values()), compressed_bytes(None, state)
    else:
        assert out.path is not None
        size, packed = out.path.stat().st_size, compressed_bytes(out.path)
    return Built(c, out.model, out.path, macs, params, size, ctx.seconds, out.float_layers, packed, compression)


def rebuild_module(model: nn.Module, c: Candidate, example: torch.Tensor, state: dict[str, torch.Tensor]) -> nn.Module:
    """A torch candidate's module from its saved state_dict: ``model`` (freshly built, any weights) shaped as
    ``build`` shapes it (blocks dropped and groups pruned to the state's own shapes, folded, cast), then the
    saved weights loaded."""
    model = reshape(model.eval(), c, example, state)
    if c.fold_bn:
        model = fold_bn(model)
    module = cast_torch(model, c.precision)
    module.load_state_dict(state)
    return module.eval()
