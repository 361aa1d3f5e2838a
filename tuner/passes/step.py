"""The contract of an artifact step: what it gets (the context, the prepared module and its cache key) and
what it returns (the artifact and its key). ``tuner.passes.chain.ARTIFACT_STEPS`` maps each artifact kind to one."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuner import progress

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tuner.candidate import Candidate
    from tuner.workload import Workload


@dataclass
class StepContext:
    """What a step gets besides its input module: the workload, the candidate, a real example input and the
    per-step timer (``Built.seconds``)."""

    workload: Workload
    candidate: Candidate
    example: torch.Tensor
    seconds: dict[str, float]

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with progress.stage(step):  # a long step is told on screen as it ends
                yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Artifact:
    model: nn.Module | None  # a torch module, or
    path: Path | None  # a file
    key: str  # its content key: the input of a following step's key
    float_layers: tuple[str, ...] = ()  # int8: the layers kept in float (by sensitivity), for the record


# A step turns the pruned, recovered and folded module (with that module's cache key) into the artifact; the
# module is None for a model brought as an ONNX file (``Workload.onnx``), whose steps start from that file.
ArtifactStep = Callable[[StepContext, "nn.Module | None", str], Artifact]
