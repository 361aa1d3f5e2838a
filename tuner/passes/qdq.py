"""ONNX Runtime static quantization to QDQ: the graph preprocessed once, a calibration reader over the data's
calibration split, and ``quantize_qdq`` (all layers, some, or all but some; per-channel weights)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.errors import CandidateBuildError, first_line
from tuner.names import INPUT

if TYPE_CHECKING:
    from tuner.dataset import Dataset

CALIBRATION_BATCH = 32
# int8_ops=compute quantizes these ops' inputs only. With every op quantized (int8_ops=all), activations stay int8
# from layer to layer, which convolutional nets run fastest (resnet18 trained at 96 px, OpenVINO, 1 thread: 1.01 ms,
# 1.16 compute only); a transformer's Softmax, LayerNorm, GELU and residual Adds then run as int8 -> float -> int8
# conversions that cost more than its int8 matmuls save, and lose accuracy (benchmarks/models.py:small_vit trained
# at 96 px, oneDNN capped at AVX512_CORE_VNNI: every op 5.95 ms and -1.12 points, compute only 3.94 ms and +0.38,
# fp32 6.80; benchmarks/HISTORY.md).
COMPUTE_OPS = ("Conv", "Gemm", "MatMul")


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over the calibration split (or its first ``limit`` images).

    ``equal_batches``: ORT's histogram calibrators (entropy, percentile) stack every batch's outputs into one
    array, so a smaller last batch breaks them; the remainder past whole batches is left out there."""

    def __init__(self, data: Dataset, limit: int | None = None, equal_batches: bool = False):
        n = len(data.calib) if limit is None else min(limit, len(data.calib))
        if equal_batches and n > CALIBRATION_BATCH:
            n -= n % CALIBRATION_BATCH
        split = type(data.calib)(data.calib.images[:n], data.calib.labels[:n])
        self._batches: Iterator[tuple[np.ndarray, np.ndarray]] = data.batches(split, CALIBRATION_BATCH)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch[0]}


def preprocess(fp32_onnx: Path, out: Path) -> Path:
    """Shape inference and ORT's own graph cleanup, so that quantization sees fused ops. Deterministic: node names
    here are what sensitivity ranks and what ``keep_float`` excludes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_onnx), str(out), skip_symbolic_shape=True)
    return out


def quantize_qdq(
    prepared: Path,
    out: Path,
    reader: Any,
    reduce_range: bool,
    method: str = "minmax",
    nodes_to_quantize: Sequence[str] | None = None,
    keep_float: Sequence[str] = (),
    ops: str = "all",
) -> Path:
    """ORT static QDQ: QUInt8 activations, per-channel QInt8 weights, ranges by ``method``; ``ops`` as int8_ops.

    ``reduce_range`` (7-bit weights) is for CPUs without VNNI, whose u8 x s8 kernels sum pairs in
    saturating 16-bit registers: full-range weights overflow there and cost points of accuracy.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # The quantizer warns on the root logger for every 1-D weight it cannot quantize per channel (a transformer's
    # LayerNorm scales: one line each) and quantizes them per tensor, as it should; errors still show.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            calibrate_method=methods[method],
            nodes_to_quantize=list(nodes_to_quantize or []),
            nodes_to_exclude=list(keep_float),
            **({"op_types_to_quantize": list(COMPUTE_OPS)} if ops == "compute" else {}),
        )
    finally:
        root.setLevel(level)
    if keep_float:
        _float_inputs(out, set(keep_float))
    return out


def _float_inputs(path: Path, nodes: set[str]) -> None:
    """Feed each kept-float node its input in float: Clip(x, lo, hi) of the tensor the Q -> DQ pair quantized.

    Excluding a node from quantization leaves it between a DequantizeLinear and a QuantizeLinear, a pattern
    ONNX Runtime's optimizer (weight/bias quantization) turns back into an int8 kernel, so the layer would not
    stay float in ORT. Fed from the Q's float input it does, in any runtime that loads the file. The Clip keeps
    what the pair did besides rounding: the quantizer folds a ReLU into the Q's range (its output clipped at
    0), so the float tensor before the Q may hold values that the layer never saw quantized."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    made_by = {o: n for n in model.graph.node for o in n.output}
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    added: list[Any] = []
    for node in model.graph.node:
        if node.name not in nodes:
            continue
        for i, name in enumerate(node.input):
            dq = made_by.get(name)
            q = made_by.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[1] not in values:
                continue
            scale, zero = values[q.input[1]], values[q.input[2]]
            if scale.size != 1:  # per-channel: not an activation
                continue
            info = np.iinfo(zero.dtype)
            bounds = [(float(b) - float(zero)) * float(scale) for b in (info.min, info.max)]
            names = [f"{node.name}_in{i}_{side}" for side in ("lo", "hi")]
            model.graph.initializer.extend(
                numpy_helper.from_array(np.asarray(b, np.float32), n) for b, n in zip(bounds, names)
            )
            clipped = f"{node.name}_in{i}_float"
            added.append(helper.make_node("Clip", [q.input[0], *names], [clipped], name=clipped))
            node.input[i] = clipped
    for clip in added:  # topological order: each Clip right before its consumer is enough for ONNX checkers
        consumer = next(k for k, n in enumerate(model.graph.node) if clip.output[0] in n.input)
        model.graph.node.insert(consumer, clip)
    onnx.save(model, str(path))


def quantize_int8(
    fp32_onnx: Path,
    data: Dataset,
    out: Path,
    reduce_range: bool,
    method: str = "minmax",
    keep_float: Sequence[str] = (),
    ops: str = "all",
    images: int | None = None,
) -> Path:
    """Static int8 of the whole model (but ``keep_float``; only its compute layers where ``ops`` is compute),
    calibrated on the calib split (its first ``images``)."""
    prepared = out.with_name("preprocessed.onnx")
    try:
        reader = CalibrationReader(data, images, equal_batches=method != "minmax")
        quantize_qdq(preprocess(fp32_onnx, prepared), out, reader, reduce_range, method, keep_float=keep_float, ops=ops)
    except Exception as err:  # noqa: BLE001 - any quantizer failure fails this candidate only
        first = first_line(err, 200) or type(err).__name__
        raise CandidateBuildError(f"int8 static quantization failed ({first}); try another precision.") from None
    finally:
        prepared.unlink(missing_ok=True)
    return out
