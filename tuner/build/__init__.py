"""Build one candidate: prune -> recover -> fold -> convert/export, each step cached by content.

``build`` never sees Optuna and never measures; it returns a ``Built`` that ``measure`` loads.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
import torch_pruning
from torch import nn

from tuner import hardware, runtimes
from tuner.build.export import export_onnx
from tuner.build.fuse import fold_bn
from tuner.build.prune import count, prune
from tuner.build.quantize import cast_torch, convert_fp16, quantize_int8
from tuner.build.recover import learning_rate, recover
from tuner.cache import make_key
from tuner.candidate import Candidate
from tuner.runtimes.base import ONNX_FP16, ONNX_INT8, TORCH_MODULE
from tuner.workload import Workload


@dataclass
class Built:
    candidate: Candidate
    model: nn.Module | None  # the torch module, for torch placements
    onnx_path: Path | None  # the ONNX file, for ORT placements
    macs: int  # per sample
    params: int
    artifact_bytes: int
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per build step

    @property
    def artifact_mb(self) -> float:
        return self.artifact_bytes / 2**20


def build(w: Workload, c: Candidate) -> Built:
    placement = runtimes.check_supported(c)  # refuse before any work
    seconds: dict[str, float] = {}
    example = torch.from_numpy(w.data.example(1))
    model, model_key = _pruned_and_recovered(w, c.prune_ratio, example, seconds)
    macs, params = count(model, example)
    if c.fold_bn:
        with _timed(seconds, "fuse"):
            model = fold_bn(model)
    kind = placement.artifact(c.precision)
    if kind == TORCH_MODULE:
        with _timed(seconds, "convert"):
            model = cast_torch(model, c.precision)
        size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        return Built(c, model, None, macs, params, size, seconds)

    key = make_key(stage="onnx", input=model_key, fold_bn=c.fold_bn, torch=torch.__version__)
    with _timed(seconds, "export"):
        path = w.cache.entry(key, lambda d: export_onnx(model, example, d / "model.onnx")) / "model.onnx"
    if kind == ONNX_INT8:
        import onnxruntime

        reduce_range = not hardware.has_cpu_vnni()
        key = make_key(stage="int8", input=key, calib=w.data.fingerprint, ort=onnxruntime.__version__,
                       reduce_range=reduce_range)
        with _timed(seconds, "calibrate"):
            path = w.cache.entry(key, lambda d: quantize_int8(path, w.data, d / "model.onnx", reduce_range)) \
                / "model.onnx"
    elif kind == ONNX_FP16:
        key = make_key(stage="fp16", input=key)
        with _timed(seconds, "convert"):
            path = w.cache.entry(key, lambda d: convert_fp16(path, d / "model.onnx")) / "model.onnx"
    return Built(c, None, path, macs, params, path.stat().st_size, seconds)


def _pruned_and_recovered(w: Workload, ratio: float, example: torch.Tensor,
                          seconds: dict[str, float]) -> tuple[nn.Module, str]:
    """The reference model pruned at ``ratio`` and recovered; the fine-tune is cached by content."""
    model = w.reference_model()
    if ratio == 0:
        return model, w.key
    with _timed(seconds, "prune"):
        prune(model, ratio, example)  # deterministic: rebuilds the cached entry's architecture
    key = make_key(stage="prune", input=w.key, ratio=round(ratio, 6), steps=w.spec.recover_steps,
                   lr=learning_rate(ratio), seed=w.spec.seed, tp=torch_pruning.__version__)

    def fine_tune(out: Path) -> None:
        recover(model, w.reference_model(), w.data, w.spec.recover_steps, ratio, w.spec.seed)
        torch.save(model.state_dict(), out / "weights.pt")

    with _timed(seconds, "recover"):
        entry = w.cache.entry(key, fine_tune)
        model.load_state_dict(torch.load(entry / "weights.pt", map_location="cpu", weights_only=True))
    return model.eval(), key


@contextlib.contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - start
