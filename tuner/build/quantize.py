"""Precision conversion: ORT static int8 (QDQ, per-channel), fp16 ONNX, and torch fp16/bf16 casts; the
artifact steps for ONNX_INT8, ONNX_FP16 and TORCH_MODULE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tuner import hardware
from tuner.build.export import ONNX_NAME, onnx_fp32_step
from tuner.build.step import Artifact
from tuner.cache import make_key
from tuner.errors import CandidateBuildError
from tuner.names import INPUT, TORCH_DTYPES

if TYPE_CHECKING:
    from tuner.build.step import StepContext
    from tuner.data import Dataset

CALIBRATION_BATCH = 32


def cast_torch(model: nn.Module, precision: str) -> nn.Module:
    return model.to(getattr(torch, TORCH_DTYPES[precision]))


def torch_step(ctx: StepContext, model: nn.Module, key: str) -> Artifact:
    """The artifact step for TORCH_MODULE: the module cast to the candidate's precision (nothing cached)."""
    with ctx.timed("convert"):
        return Artifact(cast_torch(model, ctx.candidate.precision), None, key)


def int8_step(ctx: StepContext, model: nn.Module, key: str) -> Artifact:
    """The artifact step for ONNX_INT8: the fp32 ONNX file, calibrated and quantized once per content."""
    import onnxruntime

    fp32 = onnx_fp32_step(ctx, model, key)
    data, reduce_range = ctx.workload.data, not hardware.has_cpu_vnni()
    key = make_key(stage="int8", input=fp32.key, calib=data.fingerprint, ort=onnxruntime.__version__,
                   reduce_range=reduce_range)
    with ctx.timed("calibrate"):
        entry = ctx.workload.cache.entry(key, lambda d: quantize_int8(fp32.path, data, d / ONNX_NAME, reduce_range))
    return Artifact(None, entry / ONNX_NAME, key)


def fp16_step(ctx: StepContext, model: nn.Module, key: str) -> Artifact:
    """The artifact step for ONNX_FP16 (GPU placements): the fp32 ONNX file converted once per content."""
    fp32 = onnx_fp32_step(ctx, model, key)
    key = make_key(stage="fp16", input=fp32.key)
    with ctx.timed("convert"):
        entry = ctx.workload.cache.entry(key, lambda d: convert_fp16(fp32.path, d / ONNX_NAME))
    return Artifact(None, entry / ONNX_NAME, key)


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over the calibration split."""

    def __init__(self, data: Dataset):
        self._batches: Iterator[tuple[np.ndarray, np.ndarray]] = data.batches(data.calib, CALIBRATION_BATCH)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch[0]}


def quantize_int8(fp32_onnx: Path, data: Dataset, out: Path, reduce_range: bool) -> Path:
    """Static int8: QUInt8 activations, per-channel QInt8 weights, MinMax-calibrated on the calib split.

    ``reduce_range`` (7-bit weights) is for CPUs without VNNI, whose u8 x s8 kernels sum pairs in
    saturating 16-bit registers: full-range weights overflow there and cost points of accuracy.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_name("preprocessed.onnx")
    try:
        # Shape inference + ORT's own graph cleanup first: quantization then sees fused ops.
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), _Calibration(data), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
        )
    except Exception as err:  # noqa: BLE001 - any quantizer failure fails this candidate only
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CandidateBuildError(f"int8 static quantization failed ({first}); try another precision.") from None
    finally:
        prepared.unlink(missing_ok=True)
    return out


def convert_fp16(fp32_onnx: Path, out: Path) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (GPU placements only)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_onnx)), keep_io_types=True)
    onnx.save(model, str(out))
    return out
