"""Runtime node names back to the model's own module names, and what kind of work a node is.

torch.onnx.export (the TorchScript exporter ``tuner.passes.onnx_export`` uses) names each node by the scope of the module
that made it: ``/layer1/layer1.0/conv1/Conv`` is ``layer1.0.conv1``'s Conv; a child of a ``Sequential`` repeats its
parent's name (``/stem/stem.0/Conv``). ONNX Runtime keeps those names (``.../Conv_token_4`` after a QDQ fusion),
and OpenVINO keeps them as node names and lists the ONNX nodes it fused into a node (``originalLayersNames``).
Nodes the exporter or a runtime made up (``Transpose_token_64``, a reorder between layouts) have no module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# Node kinds: compute carries the MACs; reorder / convert / quantize move or re-encode data between nodes.
COMPUTE, REORDER, CONVERT, QUANTIZE, OTHER = "compute", "reorder", "convert", "quantize", "other"
OVERHEAD_KINDS = (REORDER, CONVERT, QUANTIZE)

_COMPUTE_OPS = {
    # OpenVINO CPU plugin
    "Convolution",
    "GroupConvolution",
    "Deconvolution",
    "FullyConnected",
    "MatMul",
    # ONNX Runtime
    "Conv",
    "FusedConv",
    "ConvTranspose",
    "Gemm",
    "FusedGemm",
    "FusedMatMul",
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "NhwcFusedConv",
    "QAttention",
    "Attention",
    # torch modules
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose2d",
    "Linear",
    "MultiheadAttention",
}
_REORDER_OPS = {"Reorder", "Transpose", "ReorderInput", "ReorderOutput"}
_CONVERT_OPS = {"Convert", "Cast"}
_QUANTIZE_OPS = {"FakeQuantize", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
_CALL = re.compile(r"_\d+$")  # the exporter's suffix on a module's second and later calls
_OP_SEGMENT = re.compile(r"^[A-Z]")  # an ONNX op type (Conv, Relu, GlobalAveragePool) ends the module scope


def kind_of(op: str, name: str = "") -> str:
    """compute | reorder | convert | quantize | other, from the node's type (and its name, for OpenVINO's
    ``Subgraph`` nodes, which are whole fused snippets: those named after a Quantize/DequantizeLinear re-encode)."""
    if op in _COMPUTE_OPS:
        return COMPUTE
    if op in _REORDER_OPS:
        return REORDER
    if op in _CONVERT_OPS:
        return CONVERT
    if op in _QUANTIZE_OPS or (
        op == "Subgraph" and name.endswith(("QuantizeLinear", "DequantizeLinear")) and module_of(name) is None
    ):
        return QUANTIZE
    return OTHER


def scope_path(name: str) -> str | None:
    """The dotted module path in an exporter node name, or None where the name carries no scope.

    ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``; ``/0/Conv`` -> ``0``; ``/Flatten`` -> None."""
    if not name.startswith("/"):
        return None
    path: list[str] = []
    for seg in name.strip("/").split("/"):
        if not seg or _OP_SEGMENT.match(seg):
            break
        if path and seg.startswith(path[-1] + "."):  # a Sequential child: "stem.0" under "stem"
            path[-1] = seg
        else:
            path.append(seg)
    return ".".join(path) or None


def module_of(name: str, modules: Iterable[str] | None = None) -> str | None:
    """The model's module a runtime node comes from, or None. With ``modules`` (the model's own names) the
    longest enclosing known module, so a scope the exporter invented does not count."""
    path = scope_path(name)
    if path is None or modules is None:
        return path
    known = set(modules)
    if path not in known and _CALL.sub("", path) in known:  # a module called twice: the exporter's "relu_1"
        return _CALL.sub("", path)
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def module_of_fused(names: Iterable[str], modules: Iterable[str] | None = None) -> str | None:
    """The module of a node that fused several source nodes (OpenVINO's ``originalLayersNames``): that of its
    first compute node (``/stem/stem.0/Conv``), else of the first named one."""
    names = [n for n in names if n]
    ordered = sorted(names, key=lambda n: kind_of(n.rstrip("/").split("/")[-1].split("_")[0]) != COMPUTE)
    for n in ordered:
        found = module_of(n, modules)
        if found is not None:
            return found
    return None


def onnx_channels(path: Path) -> dict[str, int]:
    """Output channels (features) per module of the compute layers of an ONNX file, read from their weights
    (through a DequantizeLinear for int8 QDQ): what pruning left of each layer."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    produced = {o: n for n in graph.node for o in n.output}
    for n in graph.node:  # Constant nodes hold weights too
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = tuple(numpy_helper.to_array(a.t).shape)
    out: dict[str, int] = {}
    for n in graph.node:
        if n.op_type not in ("Conv", "Gemm", "ConvTranspose") or len(n.input) < 2:
            continue
        w = n.input[1]
        src = produced.get(w)
        if src is not None and src.op_type == "DequantizeLinear":
            w = src.input[0]
        shape = shapes.get(w)
        module = module_of(n.name)
        if shape is None or module is None:
            continue
        trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
        out[module] = int(
            shape[1] if n.op_type == "ConvTranspose" or (n.op_type == "Gemm" and not trans_b) else shape[0]
        )
    return out


def torch_channels(model: object) -> dict[str, int]:
    """Output channels (features) per module of a torch model's conv and linear layers."""
    out: dict[str, int] = {}
    for name, m in model.named_modules():  # type: ignore[attr-defined]
        n = getattr(m, "out_channels", None) or getattr(m, "out_features", None)
        if isinstance(n, int) and name:
            out[name] = n
    return out


_TENSOR_SUFFIX = re.compile(r"(_nchwc|_token_\d+)+$")


def compute_sources(path: Path) -> dict[str, str]:
    """Output tensor -> the compute node behind it, for the tensors of an ONNX file that a non-compute node makes
    (``/stem/stem.2/Relu_output_0`` -> ``/stem/stem.0/Conv``). ONNX Runtime names a node its optimizer fused (a
    Conv with its Relu, in NCHWc layout) after the fused chain's last output: this finds the conv again."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    out: dict[str, str] = {}
    for tensor, node in producer.items():
        seen = node
        for _ in range(3):  # Conv -> Relu, Conv -> HardSwish -> Mul: a short chain of elementwise ops
            if kind_of(seen.op_type) == COMPUTE or not seen.input or seen.input[0] not in producer:
                break
            seen = producer[seen.input[0]]
        if seen is not node and kind_of(seen.op_type) == COMPUTE:
            out[tensor] = seen.name
    return out


def ort_source(node: str, sources: dict[str, str]) -> str:
    """The name to read an ORT node's module from: the compute node behind a fused node named by its output."""
    return sources.get(_TENSOR_SUFFIX.sub("", node), node)
