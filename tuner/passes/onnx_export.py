"""Export: the torch module to an ONNX file with a dynamic batch axis (for ONNX Runtime and OpenVINO)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from tuner.cache import code_id, make_key
from tuner.errors import CandidateBuildError, first_line
from tuner.names import INPUT, OUTPUT
from tuner.passes.step import Artifact

if TYPE_CHECKING:
    from tuner.passes.step import StepContext

OPSET = 17
ONNX_NAME = "model.onnx"


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    # dynamo=False: the TorchScript exporter takes ~0.7 s for a ResNet18 where dynamo takes ~4 s
    # and needs onnxscript; its output runs the same in ORT.
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(),
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    except Exception as err:  # noqa: BLE001 - the user's model meets the exporter: any failure fails the trial
        first = first_line(err, 200) or type(err).__name__
        raise CandidateBuildError(f"ONNX export failed ({first}); use a torch placement for this model.") from None
    return path


def onnx_fp32_step(ctx: StepContext, model: nn.Module | None, key: str) -> Artifact:
    """The artifact step for ONNX_FP32: the module exported once per (module, folding), cached; a model brought
    as an ONNX file is that file (prepared once, ``tuner.workload``)."""
    if ctx.workload.onnx is not None:
        return Artifact(None, ctx.workload.onnx.path, ctx.workload.key)
    assert model is not None
    key = make_key(
        stage="onnx",
        input=key,
        fold_bn=ctx.candidate.fold_bn,
        opset=OPSET,
        torch=torch.__version__,
        code=code_id("tuner.passes.fuse"),
    )
    with ctx.timed("export"):
        entry = ctx.workload.cache.entry(key, lambda d: export_onnx(model, ctx.example, d / ONNX_NAME))
    return Artifact(None, entry / ONNX_NAME, key)
