"""Layer sensitivity to int8: for each quantizable layer (Conv, Gemm, MatMul) of a model's fp32 ONNX file, the
error that quantizing that layer alone causes, measured on calibration images (never the validation split the
study scores on). Computed once per model (per prune ratio), cached by content; ``most_sensitive`` names the k
layers a mixed-precision build keeps in float.

The error is the logits' mean squared difference from fp32, relative to the fp32 logits' mean square: a
continuous score that ranks layers where top-1 on a few hundred images would tie. Each layer is quantized
with ORT's own quantizer and run in ORT's int8 kernels, as the build will run it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tuner.cache import make_key
from tuner.names import INPUT, OUTPUT
from tuner.passes.qdq import COMPUTE_OPS, CalibrationReader, preprocess, quantize_qdq

if TYPE_CHECKING:
    from tuner.dataset import Dataset
    from tuner.passes.step import Artifact, StepContext

IMAGES = 128  # calibration images per layer: enough to rank, cheap enough for ~50 layers
FILE = "sensitivity.json"


@dataclass(frozen=True)
class LayerSensitivity:
    node: str  # the node name in the preprocessed graph (what the quantizer's nodes_to_exclude takes)
    op: str
    error: float  # mean squared logit error / mean squared fp32 logit, this layer alone in int8
    agreement: float  # share of the images whose top-1 class is unchanged


def most_sensitive(ctx: StepContext, fp32: Artifact, k: int, reduce_range: bool) -> tuple[str, ...]:
    """The names of the ``k`` layers most sensitive to int8 (all of them when the model has fewer)."""
    return tuple(s.node for s in ranking(ctx, fp32, reduce_range)[:k])


def ranking(ctx: StepContext, fp32: Artifact, reduce_range: bool) -> list[LayerSensitivity]:
    """Every quantizable layer, most sensitive first (ties by name: deterministic), cached by content."""
    import onnxruntime

    data = ctx.workload.data
    key = make_key(
        stage="sensitivity",
        input=fp32.key,
        calib=data.fingerprint,
        ort=onnxruntime.__version__,
        reduce_range=reduce_range,
        images=IMAGES,
    )
    assert fp32.path is not None
    entry = ctx.workload.cache.entry(key, lambda d: _write(d / FILE, measure_layers(fp32.path, data, reduce_range)))
    return [LayerSensitivity(**row) for row in json.loads((entry / FILE).read_text())]


def _write(path: Path, layers: list[LayerSensitivity]) -> None:
    path.write_text(json.dumps([asdict(s) for s in layers], indent=1))


def measure_layers(fp32_onnx: Path, data: Dataset, reduce_range: bool) -> list[LayerSensitivity]:
    import onnx

    tmp = Path(tempfile.mkdtemp(prefix="tuner-sensitivity-"))
    try:
        prepared = preprocess(fp32_onnx, tmp / "prepared.onnx")
        x = data.normalize(data.calib.images[:IMAGES])
        reference = _logits(prepared, x)
        scale = float(np.mean(reference**2)) or 1.0
        layers = []
        for node in onnx.load(str(prepared)).graph.node:
            if node.op_type not in COMPUTE_OPS:
                continue
            one = quantize_qdq(
                prepared, tmp / "one.onnx", CalibrationReader(data, IMAGES), reduce_range, nodes_to_quantize=[node.name]
            )
            logits = _logits(one, x)
            layers.append(
                LayerSensitivity(
                    node.name,
                    node.op_type,
                    float(np.mean((logits - reference) ** 2)) / scale,
                    float(np.mean(logits.argmax(1) == reference.argmax(1))),
                )
            )
        return sorted(layers, key=lambda s: (-s.error, s.node))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # deterministic sums: the ranking must not depend on the thread count
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([OUTPUT], {INPUT: x[i : i + 64]})[0] for i in range(0, len(x), 64)])
