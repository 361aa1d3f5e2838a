"""Precision conversion: ORT static int8 (QDQ, per-channel), fp16 ONNX, and torch fp16/bf16 casts; the
artifact steps for ONNX_INT8, ONNX_FP16 and TORCH_MODULE."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from tuner import hardware
from tuner.cache import code_id, make_key
from tuner.hardware import library_versions
from tuner.names import TORCH_DTYPES
from tuner.passes.onnx_export import ONNX_NAME, onnx_fp32_step
from tuner.passes.qdq import CALIBRATION_BATCH, quantize_int8
from tuner.passes.sensitivity import most_sensitive
from tuner.passes.step import Artifact

if TYPE_CHECKING:
    from tuner.passes.step import StepContext


def cast_torch(model: nn.Module, precision: str) -> nn.Module:
    return model.to(getattr(torch, TORCH_DTYPES[precision]))


def torch_step(ctx: StepContext, model: nn.Module | None, key: str) -> Artifact:
    """The artifact step for TORCH_MODULE: the module cast to the candidate's precision (nothing cached)."""
    assert model is not None  # build refuses torch placements for an ONNX file
    with ctx.timed("convert"):
        return Artifact(cast_torch(model, ctx.candidate.precision), None, key)


def int8_step(ctx: StepContext, model: nn.Module | None, key: str) -> Artifact:
    """The artifact step for ONNX_INT8: the fp32 ONNX file, calibrated and quantized once per content; with
    ``float_layers`` k > 0, the k layers most sensitive to int8 (tuner.passes.sensitivity) stay in float."""
    import onnxruntime

    c = ctx.candidate
    fp32 = onnx_fp32_step(ctx, model, key)
    data, reduce_range = ctx.workload.data, not hardware.has_cpu_vnni()
    images = min(c.calibration_images or len(data.calib), len(data.calib))
    keep_float: tuple[str, ...] = ()
    if c.float_layers:
        with ctx.timed("sensitivity"):
            keep_float = most_sensitive(ctx, fp32, c.float_layers, reduce_range)
    key = make_key(
        stage="int8",
        input=fp32.key,
        calib=data.fingerprint,
        ort=onnxruntime.__version__,
        reduce_range=reduce_range,
        method=c.calibration,
        ops=c.int8_ops,
        calib_images=images,
        calib_batch=CALIBRATION_BATCH,
        keep_float=list(keep_float),
        libraries=library_versions("onnx"),
        code=code_id("tuner.passes.qdq"),
    )
    with ctx.timed("calibrate"):
        entry = ctx.workload.cache.entry(
            key,
            lambda d: quantize_int8(
                fp32.path, data, d / ONNX_NAME, reduce_range, c.calibration, keep_float, c.int8_ops, images
            ),
        )
    return Artifact(None, entry / ONNX_NAME, key, keep_float)


def fp16_step(ctx: StepContext, model: nn.Module | None, key: str) -> Artifact:
    """The artifact step for ONNX_FP16 (GPU placements): the fp32 ONNX file converted once per content."""
    fp32 = onnx_fp32_step(ctx, model, key)
    key = make_key(stage="fp16", input=fp32.key, libraries=library_versions("onnx", "onnxruntime", "onnxruntime-gpu"))
    with ctx.timed("convert"):
        entry = ctx.workload.cache.entry(key, lambda d: convert_fp16(fp32.path, d / ONNX_NAME))
    return Artifact(None, entry / ONNX_NAME, key)


def convert_fp16(fp32_onnx: Path, out: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (GPU placements only)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=True)
    onnx.save(model, str(out))
    return out
