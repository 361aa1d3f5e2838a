"""The two small contracts every runtime implements: a Placement (what it can run, here) and a
Session (a loaded model: prepare inputs untimed, run them timed)."""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner.names import PLACEMENTS, PlacementInfo, artifact_kind

if TYPE_CHECKING:
    from torch import nn


def executed_of(counts: dict[str, int]) -> str:
    """fp32 | fp16 | bf16 | int8 when every compute layer runs in one precision, else mixed."""
    kinds = [k for k, n in counts.items() if n]
    return kinds[0] if len(kinds) == 1 else ("mixed" if kinds else "fp32")


def describe_precisions(counts: dict[str, int] | None) -> str:
    """``int8 18 / fp32 3``: the compute layers per executed precision, most first."""
    return " / ".join(f"{k} {n}" for k, n in sorted((counts or {}).items(), key=lambda kv: (-kv[1], kv[0])) if n)


class Session(ABC):
    executed_precision: str = "fp32"  # read back from the runtime: fp32 | fp16 | bf16 | int8 | mixed
    layer_precisions: dict[str, int] | None = None  # compute layers per executed precision, where readable
    streams: int = 1  # requests this session runs at once (tuner.candidate.Candidate.streams)

    @abstractmethod
    def prepare(self, x: np.ndarray) -> Any:
        """Put a normalized float32 batch where and how the model reads it (not timed)."""

    @abstractmethod
    def run(self, prepared: Any) -> Any:
        """The model call alone: this is what latency times; returns once outputs are ready."""

    @abstractmethod
    def to_numpy(self, outputs: Any) -> np.ndarray:
        """Logits as float32 numpy (not timed)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.to_numpy(self.run(self.prepare(x)))

    def serve(self, x: np.ndarray, requests: int) -> list[Callable[[], Any]]:
        """Lanes for the load generator (``tuner.measure.load``): callables that each run one request of batch ``x``
        to completion and may run at once, one per worker thread; requests beyond them wait in its queue. One lane
        (the session's own ``run``) unless the runtime serves several streams (then one per stream, or per infer
        request where the runtime queues requests itself). Inputs are prepared here, untimed."""
        return [functools.partial(self.run, self.prepare(x))]

    def serving_settings(self) -> dict[str, Any]:
        """The serving settings as the runtime reports them (streams, threads, requests it holds), for the record."""
        return {"streams": self.streams}

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Placement(ABC):
    """A runtime on a device. What it is comes from ``tuner.names.PLACEMENTS``; what runs here, from probes."""

    def __init__(self, name: str):
        self.info: PlacementInfo = PLACEMENTS[name]
        self.name = name

    @property
    def precisions(self) -> tuple[str, ...]:
        """Every precision this runtime can run on some machine."""
        return self.info.precisions

    @abstractmethod
    def unavailable(self) -> str | None:
        """Why this placement cannot run on this machine, or None when it can."""

    def refuse(self, precision: str) -> str | None:
        """Why ``precision`` cannot run here, or None. Checked before any build work."""
        if precision not in self.precisions:
            return f"{self.name} does not run {precision} (it runs {', '.join(self.precisions)})"
        return None

    def refuse_serving(self, streams: int, requests: int) -> str | None:
        """Why this placement cannot serve ``streams`` at once with ``requests`` in flight, or None. Checked before any
        build work, as precisions are."""
        if self.info.gpu and streams > 1:
            return (
                f"{self.name} serves one stream: several would each hold the model on the one GPU and contend for "
                "it; use streams 1 (more requests in flight queue for it)"
            )
        return None

    def artifact(self, precision: str) -> str:
        """Which artifact the builder must produce (TORCH_MODULE or an ONNX_* kind)."""
        return artifact_kind(self.name, precision)

    @abstractmethod
    def open(
        self,
        model: nn.Module | None,
        onnx_path: Path | None,
        precision: str,
        graph_opt: str,
        threads: int,
        streams: int = 1,
    ) -> Session:
        """Load the built artifact into the runtime, configured as the candidate says (``threads`` per stream)."""
