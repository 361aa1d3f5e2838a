"""PyTorch eager on CPU or CUDA.

Several streams on CPU are that many threads running the one module at once (inference is read-only), each an
OpenMP team of ``threads``: ``torch.set_num_threads`` is the process's setting and every thread that enters an
intra-op parallel region takes it up. Python's share of an eager forward holds the GIL, so streams pay off where
the kernels, not the Python between them, take the time. Inter-op threads serve TorchScript's fork/wait, which
an eager module never calls: they are not a setting here."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner import hardware
from tuner.names import PRECISION_OF_DTYPE, TORCH_DTYPES
from tuner.runtimes.base import Placement, Session

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where a session is made or run, never at import: the registry (and so the study's parent
# process, which only asks what is available here) imports this module without it, as ort.py and openvino.py do
# their runtimes.


def torch_dtype(precision: str) -> torch.dtype:
    import torch

    return getattr(torch, TORCH_DTYPES[precision])


class TorchSession(Session):
    def __init__(self, model: nn.Module, device: str, dtype: torch.dtype, threads: int, streams: int = 1):
        import torch

        self.torch = torch  # bound once: the timing loop calls run() with no import in it
        if device == "cpu":
            torch.set_num_threads(threads)  # process-wide: trials run one at a time per process
        self.streams = streams
        self.device, self.dtype = torch.device(device), dtype
        self.model = _eval(model.to(self.device))
        found = {
            PRECISION_OF_DTYPE.get(str(p.dtype), str(p.dtype)) for p in self.model.parameters() if p.is_floating_point()
        }
        self.executed_precision = found.pop() if len(found) == 1 else "mixed"

    def prepare(self, x: np.ndarray) -> torch.Tensor:
        return self.torch.from_numpy(x).to(self.device, self.dtype)

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        with self.torch.inference_mode():
            out = self.model(prepared)
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()  # kernels are async: time until the result exists
        return out

    def to_numpy(self, outputs: Any) -> np.ndarray:
        return outputs.float().cpu().numpy()

    def serve(self, x: np.ndarray, requests: int) -> list[Any]:
        """One lane per stream, all running the one module on one prepared batch (read-only)."""
        prepared = self.prepare(x)
        return [functools.partial(self.run, prepared) for _ in range(self.streams)]

    def serving_settings(self) -> dict[str, Any]:
        return {"streams": self.streams, "intra_op_threads": self.torch.get_num_threads()}


class TorchPlacement(Placement):
    def __init__(self, device: str):
        super().__init__(f"torch-{device}")
        self.device = device

    def unavailable(self) -> str | None:
        if self.device == "cuda" and not hardware.cuda_available():
            return "torch-cuda needs a CUDA GPU and a CUDA build of torch; none found"
        return None

    def refuse(self, precision: str) -> str | None:
        if precision == "int8":
            return f"{self.name} does not run int8; int8 runs through ONNX Runtime (placement ort-cpu)"
        if self.device == "cpu" and precision == "bf16" and (why := hardware.bf16_refusal(self.name)):
            return why
        if self.device == "cuda" and precision == "bf16" and hardware.cuda_available():
            import torch

            if not torch.cuda.is_bf16_supported():
                return "bf16 on torch-cuda needs an Ampere or newer GPU"
        return super().refuse(precision)

    def open(
        self,
        model: nn.Module | None,
        onnx_path: Path | None,
        precision: str,
        graph_opt: str,
        threads: int,
        streams: int = 1,
    ) -> Session:
        assert model is not None
        return TorchSession(model, self.device, torch_dtype(precision), threads, streams)


def _eval(model: nn.Module) -> nn.Module:
    """Inference mode for the module; a torch.export program's module refuses ``eval()`` and needs none."""
    try:
        return model.eval()
    except (NotImplementedError, RuntimeError):
        return model
