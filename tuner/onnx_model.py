"""A model brought as an ONNX file (``--model path/to/model.onnx``): its signature checked (one float32
N x 3 x H x W input, one (N, classes) output), a copy prepared under the tuner's own input and output names
with a symbolic batch axis, that copy checked on real images in ONNX Runtime, and its size counted
(parameters, MACs per sample), all without torch.

A file whose batch axis is fixed is given a symbolic one, and kept only when a batch of 2 gives each image's
own logits: the calibration, accuracy and latency passes run batches of many sizes. A graph that relies on its
fixed batch (a Reshape to it) is refused with the export line that fixes it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import ModelError, one_line
from tuner.names import INPUT, OUTPUT

_FLOAT = 1  # onnx.TensorProto.FLOAT


def dynamic_export(input_name: str, output_name: str) -> str:
    """The export line that gives a file of these names a dynamic batch axis: TorchScript's exporter
    (``dynamo=False``), whose ``dynamic_axes`` go by these names and which needs nothing beyond torch."""
    return (
        f"torch.onnx.export(model, x, 'model.onnx', dynamo=False, input_names=[{input_name!r}], "
        f"output_names=[{output_name!r}], dynamic_axes={{{input_name!r}: {{0: 'batch'}}, "
        f"{output_name!r}: {{0: 'batch'}}}})"
    )


@dataclass(frozen=True)
class Signature:
    """What the file says of its one input and one output (None: symbolic or not given)."""

    input: str
    output: str
    batch: int | None
    height: int | None
    width: int | None
    classes: int | None


def _dims(value_info: Any) -> list[int | None] | None:
    """A graph input's or output's shape, fixed dims as ints and symbolic ones as None (None: no shape given)."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]


def _load(path: Path) -> Any:
    import onnx

    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ModelError(f"model file {path} {what}; pass --model path/to/model.onnx.")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 - protobuf, checker and file errors all mean "not a usable ONNX file"
        raise ModelError(
            f"model file {path} is not a valid ONNX model ({one_line(err, 200, whole=True)}); export it with "
            "torch.onnx.export or pass another --model."
        ) from None
    if not model.graph.node:
        raise ModelError(f"model file {path} holds no graph (no nodes); pass an exported ONNX model.")
    return model


def read_signature(path: Path) -> Signature:
    """Check the file's input and output, refusing in one line what the tuner cannot feed or read."""
    graph = _load(path).graph
    weights = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]  # older exporters list the weights as inputs too
    where = f"model file {path}"
    if len(inputs) != 1:
        raise ModelError(
            f"{where} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)[:120]}); the tuner "
            "feeds one image batch (N x 3 x H x W): export the model with one input."
        )
    if len(graph.output) != 1:
        raise ModelError(
            f"{where} has {len(graph.output)} outputs ({', '.join(o.name for o in graph.output)[:120]}); "
            "the tuner reads one (N, classes) logits output: export the logits alone."
        )
    x, y = inputs[0], graph.output[0]
    if x.type.tensor_type.elem_type != _FLOAT:
        raise ModelError(
            f"{where}: input {x.name!r} is not float32 (ONNX type {x.type.tensor_type.elem_type}); the "
            "tuner feeds normalized float32 images: export the model in float32."
        )
    shape = _dims(x)
    if shape is None or len(shape) != 4 or shape[1] not in (None, 3):
        got = "no shape" if shape is None else "x".join("?" if d is None else str(d) for d in shape)
        raise ModelError(f"{where}: input {x.name!r} has shape {got}; the tuner feeds N x 3 x H x W images.")
    if shape[2] is not None and shape[3] is not None and shape[2] != shape[3]:
        raise ModelError(
            f"{where}: input {x.name!r} takes {shape[2]} x {shape[3]} images; the tuner feeds square "
            "ones (H = W): export the model at a square size."
        )
    out = _dims(y)
    if out is not None and len(out) != 2:
        raise ModelError(f"{where}: output {y.name!r} has {len(out)} axes; the tuner reads (N, classes) logits.")
    return Signature(x.name, y.name, shape[0], shape[2], shape[3], out[1] if out else None)


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename a tensor everywhere in ``graph`` and its subgraphs (If / Loop bodies read outer names)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
        for attr in node.attribute:
            for sub in [attr.g] * attr.HasField("g") + list(attr.graphs):
                _rename(sub, old, new)
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.name == old:
            vi.name = new
    for init in graph.initializer:
        if init.name == old:
            init.name = new


def prepare(path: Path, out: Path) -> Path:
    """A copy of the file with its input named ``input`` and its output ``logits`` (as every ONNX file of the
    tuner), their batch axis symbolic, and the intermediate shapes dropped (they may carry the old batch)."""
    import onnx

    model = _load(path)
    sig = read_signature(path)
    graph = model.graph
    taken = {n for node in graph.node for n in [*node.input, *node.output]} | {i.name for i in graph.initializer}
    for old, new in ((sig.input, INPUT), (sig.output, OUTPUT)):
        if old != new:
            if new in taken:  # an inner tensor already holds the name: it moves aside first
                _rename(graph, new, f"{new}__inner")
            _rename(graph, old, new)
    x = next(i for i in graph.input if i.name == INPUT)
    for vi in (x, graph.output[0]):
        if vi.type.tensor_type.HasField("shape"):
            dim = vi.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_param = "batch"
    del graph.value_info[:]
    onnx.save(model, str(out))
    return out


def check_runs(prepared: Path, example: np.ndarray, num_classes: int, name: str, sig: Signature) -> None:
    """Run a real batch of 2 through the prepared file in ONNX Runtime: (2, classes) logits, each image's own.
    ``sig``: the file's own signature (the fix line names its input and output)."""
    fixed_batch = sig.batch
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: a failing run is told below, in one line
    opts.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(prepared), opts, providers=["CPUExecutionProvider"])
        both = session.run([OUTPUT], {INPUT: example[:2]})[0]
        alone = np.concatenate([session.run([OUTPUT], {INPUT: example[i : i + 1]})[0] for i in range(2)])
    except Exception as err:  # noqa: BLE001 - ORT refuses a graph or a shape in many ways
        why = f" (its batch of {fixed_batch} is fixed)" if fixed_batch else ""
        node = re.search(r"while running (\w+) node", str(err))  # ORT's own message runs to many lines
        raise ModelError(
            f"model {name} fails on a batch of 2 images {tuple(example[:2].shape)}{why}: "
            + (f"ONNX Runtime fails in its {node.group(1)} node" if node else one_line(err, 200, whole=True))
            + f"; export it with a dynamic batch axis: {dynamic_export(sig.input, sig.output)}."
        ) from None
    if both.shape != (2, num_classes):
        raise ModelError(
            f"model {name} returns shape {both.shape} for a batch of 2; expected (batch, classes) = "
            f"(2, {num_classes}) logits (the data has {num_classes} classes)."
        )
    scale = float(np.abs(alone).max()) or 1.0
    if not np.allclose(both, alone, rtol=1e-3, atol=1e-4 * scale):
        raise ModelError(
            f"model {name} gives other logits to an image in a batch of 2 than alone"
            + (f" (its graph relies on its fixed batch of {fixed_batch})" if fixed_batch else "")
            + f"; export it with a dynamic batch axis: {dynamic_export(sig.input, sig.output)}."
        )


def count(prepared: Path, resolution: int) -> tuple[int, int]:
    """(MACs per sample of its Conv, Gemm and MatMul nodes, float parameters) of an ONNX file, from ONNX's
    shape inference at batch 1 (a node whose shapes stay unknown is not counted)."""
    import onnx

    model = onnx.load(str(prepared))
    graph = model.graph
    params = sum(math.prod(i.dims) for i in graph.initializer if i.data_type in (1, 10, 11, 16))  # f32 f16 f64 bf16
    x = next(i for i in graph.input if i.name == INPUT)
    for dim, value in zip(x.type.tensor_type.shape.dim, (1, 3, resolution, resolution)):
        dim.Clear()
        dim.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes: dict[str, list[int | None]] = {i.name: list(i.dims) for i in graph.initializer}
    for vi in [*inferred.input, *inferred.output, *inferred.value_info]:
        shapes[vi.name] = _dims(vi) or []
    macs = 0
    for node in graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        ins = [shapes.get(i) for i in node.input]
        if not out or None in out or len(ins) < 2 or not ins[0] or not ins[1] or None in ins[0] + ins[1]:
            continue
        if node.op_type == "Conv":  # every output element: in-channels per group x kernel
            macs += math.prod(out) * math.prod(ins[1][1:])  # type: ignore[arg-type]
        elif node.op_type == "Gemm":
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            macs += math.prod(out) * int(ins[0][0] if trans_a else ins[0][-1])  # type: ignore[arg-type]
        elif node.op_type == "MatMul":
            macs += math.prod(out) * int(ins[0][-1])  # type: ignore[arg-type]
    return int(macs), int(params)
