"""Model builders a hostile (or careless) user brings, for tests/test_hostile.py: each breaks one rule of the
model contract (``builder(num_classes=N)`` returns a module whose ``forward(x)`` maps one (batch, 3, H, W) tensor
to (batch, N) logits) and must be refused in one line when the workload loads."""

from __future__ import annotations

import sys

import torch
from torch import nn

from tests.tiny_models import conv_net


class _Wrap(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.net = conv_net(num_classes)


class TwoInputs(_Wrap):
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(x * mask)


class TupleOutput(_Wrap):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, logits.detach()


class ExtraAxis(_Wrap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return torch.stack([logits, logits], dim=-1)  # (batch, classes, 2)


class ExitsInForward(_Wrap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sys.exit("forward gave up")


class RaisesInForward(_Wrap):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("this model only takes 224 px")


class AuxInTraining(_Wrap):
    """Returns (logits, aux) in training mode only, as inception-style models do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return (logits, logits) if self.training else logits


def two_inputs(num_classes: int = 10) -> nn.Module:
    return TwoInputs(num_classes)


def tuple_output(num_classes: int = 10) -> nn.Module:
    return TupleOutput(num_classes)


def extra_axis(num_classes: int = 10) -> nn.Module:
    return ExtraAxis(num_classes)


def fixed_classes(num_classes: int = 10) -> nn.Module:
    return conv_net(5)  # ignores num_classes


def exits_in_builder(num_classes: int = 10) -> nn.Module:
    sys.exit(3)


def exits_in_forward(num_classes: int = 10) -> nn.Module:
    return ExitsInForward(num_classes)


def raises_in_builder(num_classes: int = 10) -> nn.Module:
    raise RuntimeError("CUDA is required to build this model")


def raises_in_forward(num_classes: int = 10) -> nn.Module:
    return RaisesInForward(num_classes)


def aux_in_training(num_classes: int = 10) -> nn.Module:
    return AuxInTraining(num_classes)


def no_num_classes() -> nn.Module:
    return conv_net(10)


# ---------------------------------------------------------------- ONNX files (--model path/to/model.onnx)


def write_onnx(
    path: str,
    *,
    shape: tuple = ("N", 3, 16, 16),
    classes: int = 10,
    inputs: int = 1,
    outputs: int = 1,
    elem: int = 1,
    reshape_to_batch: int | None = None,
) -> str:
    """A small valid ONNX classifier (global average pool -> Gemm) that breaks one rule when asked: another input
    shape or type (``elem``: ONNX element type), two inputs or outputs, another class count, or a Reshape to a fixed
    batch (a graph that relies on its batch)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    channels = shape[1] if len(shape) == 4 else shape[-1]
    names = [f"x{i}" for i in range(inputs)]
    nodes, x = [], names[0]
    if inputs == 2:
        nodes.append(helper.make_node("Add", names, ["sum"]))
        x = "sum"
    if elem != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", [x], ["xf"], to=TensorProto.FLOAT))
        x = "xf"
    if len(shape) == 4:
        nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"])]
        if reshape_to_batch:
            nodes.append(helper.make_node("Reshape", ["pooled", "fixed"], ["flat"]))
        else:
            nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
        x = "flat"
    nodes.append(helper.make_node("Gemm", [x, "w", "b"], ["y0"], transB=1))
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(classes, channels)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "b"),
        numpy_helper.from_array(np.asarray([reshape_to_batch or 1, channels], np.int64), "fixed"),
    ]
    outs = [helper.make_tensor_value_info("y0", TensorProto.FLOAT, [shape[0], classes])]
    if outputs == 2:
        nodes.append(helper.make_node("Identity", ["y0"], ["y1"]))
        outs.append(helper.make_tensor_value_info("y1", TensorProto.FLOAT, [shape[0], classes]))
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info(n, elem, list(shape)) for n in names], outs, weights
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


class DropoutAlwaysOn(_Wrap):
    """Dropout applied whatever the mode (``F.dropout(training=True)``): two evaluations of one batch differ."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.dropout(x, 0.5, training=True))


def dropout_always_on(num_classes: int = 10) -> nn.Module:
    return DropoutAlwaysOn(num_classes)
