"""What a per-layer profile is: each runtime node as it ran (``NodeTime``), the nodes of one module together
(``LayerTime``), and the whole profile of one build (``LayerProfile``), with its JSON form."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tuner.explain.match import COMPUTE

EXECUTED, NOT_RUN = "executed", "optimized out"
VERSION = 1  # of the profile's JSON form


@dataclass(frozen=True)
class NodeTime:
    """One node of the runtime's graph as it ran."""

    node: str  # the runtime's node name
    op: str  # its type as the runtime names it (Convolution, QLinearConv, Conv2d)
    kernel: (
        str  # the implementation the runtime chose (brgconv_avx512_I8; QLinearConv on CPU; aten::mkldnn_convolution)
    )
    precision: str  # what it executed in: fp32 | bf16 | fp16 | int8 ("" where the runtime does not say)
    ms: float  # median time per call across the repeats
    status: str  # executed | optimized out (fused into another node, or folded away)
    module: str | None  # the model's module it comes from, where the name says (tuner.explain.match)
    kind: str  # compute | reorder | convert | quantize | other


@dataclass(frozen=True)
class LayerTime:
    """The nodes of one module together."""

    module: str
    ms: float
    share: float  # of the profiled call's total
    precision: str  # of its compute nodes ("int8", "fp32", "int8+fp32"), else of its nodes
    kernels: tuple[str, ...]
    nodes: int
    channels: int | None  # output channels (features) the build kept, where known
    compute: bool = False  # holds a compute node (a conv, a matmul), not only activations, pools or copies
    executed: bool = True  # False: every node of it was optimized out (fused into a neighbour)


@dataclass(frozen=True)
class LayerProfile:
    placement: str
    precision: str  # the candidate's requested precision
    batch_size: int
    threads: int
    repeats: int
    nodes: tuple[NodeTime, ...]
    total_ms: float  # median profiled call, end to end
    latency_ms: float  # median call without the profiler (the latency figure's rules, a short budget)
    counted: str  # what the per-node times count
    channels: dict[str, int] = field(default_factory=dict)  # per module, where known

    @property
    def nodes_ms(self) -> float:
        return sum(n.ms for n in self.nodes)

    @property
    def outside_ms(self) -> float:
        """The profiled call's time outside every node (never below 0: rounding to the profiler's microseconds)."""
        return max(0.0, self.total_ms - self.nodes_ms)

    def kind_ms(self, *kinds: str) -> float:
        return sum(n.ms for n in self.nodes if n.kind in kinds)

    def layers(self) -> list[LayerTime]:
        """Per module, in the order the runtime ran them; nodes without a module are left out (``unmatched``)."""
        groups: dict[str, list[NodeTime]] = {}
        for n in self.nodes:
            if n.module is not None:
                groups.setdefault(n.module, []).append(n)
        out = []
        for module, nodes in groups.items():
            ms = sum(n.ms for n in nodes)
            compute = (
                [n for n in nodes if n.kind == COMPUTE and n.status == EXECUTED]
                or [n for n in nodes if n.status == EXECUTED]
                or nodes
            )
            ran = any(n.status == EXECUTED for n in nodes)
            precision = "+".join(sorted({n.precision for n in compute if n.precision})) if ran else "-"
            kernels = tuple(dict.fromkeys(n.kernel for n in nodes if n.status == EXECUTED and n.kernel))
            out.append(
                LayerTime(
                    module,
                    ms,
                    ms / self.total_ms if self.total_ms else 0.0,
                    precision,
                    kernels,
                    len(nodes),
                    self.channels.get(module),
                    any(n.kind == COMPUTE for n in nodes),
                    ran,
                )
            )
        return out

    def unmatched(self) -> list[NodeTime]:
        return [n for n in self.nodes if n.module is None and n.status == EXECUTED]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["version"] = VERSION
        d["nodes_ms"], d["outside_ms"] = self.nodes_ms, self.outside_ms
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerProfile:
        d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        d["nodes"] = tuple(NodeTime(**n) for n in d["nodes"])
        return cls(**d)
