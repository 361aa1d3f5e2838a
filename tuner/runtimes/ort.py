"""ONNX Runtime on CPU, CUDA or TensorRT, with the executed precision read back from the optimized graph.

Several streams are that many ``InferenceSession``s of the same file and options, each with its own intra-op pool
of ``threads`` (sessions are thread-safe, but concurrent ``run`` calls on one session share that one pool and
contend in it), opened when the load generator asks for them (``serve``): an accuracy pass needs one."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner import hardware
from tuner.errors import MeasurementError
from tuner.names import INPUT, OUTPUT
from tuner.runtimes.base import Placement, Session, executed_of

if TYPE_CHECKING:
    from torch import nn

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_INT8_COMPUTE = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger"}
_COMPUTE = {"Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"}


def graph_level(name: str) -> Any:
    import onnxruntime as ort

    levels = ort.GraphOptimizationLevel
    return {
        "disable": levels.ORT_DISABLE_ALL,
        "basic": levels.ORT_ENABLE_BASIC,
        "extended": levels.ORT_ENABLE_EXTENDED,
        "all": levels.ORT_ENABLE_ALL,
    }[name]


def layer_precisions(onnx_path: Path) -> dict[str, int]:
    """Compute ops of a (runtime-optimized) graph per precision they execute in: int8 | fp16 | fp32.

    An int8 QDQ graph that ORT did not fuse (graph_opt=disable) still runs float convs between
    Quantize/Dequantize pairs: that executes as fp32, and is counted so.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    half = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in _INT8_COMPUTE:
            kind = "int8"
        elif node.op_type in _COMPUTE:
            kind = "fp16" if any(i in half for i in node.input) else "fp32"
        else:
            continue
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def executed_precision(onnx_path: Path) -> str:
    """fp32 | fp16 | int8 | mixed, from the compute ops of a (runtime-optimized) graph."""
    return executed_of(layer_precisions(onnx_path))


class OrtSession(Session):
    def __init__(
        self,
        onnx_path: Path,
        provider: str,
        provider_options: dict[str, Any],
        graph_opt: str,
        threads: int,
        requested: str,
        streams: int = 1,
    ):
        import onnxruntime as ort

        self.streams, self.threads = streams, threads
        self._more: list[Any] = []  # the sessions of streams 2.. (serve)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = graph_level(graph_opt)
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3  # errors only: saving the optimized graph warns on every session
        with tempfile.TemporaryDirectory() as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            if provider == _PROVIDERS["cpu"]:  # GPU EPs compile partitions: no inspectable graph
                opts.optimized_model_filepath = str(optimized)
            providers = [(provider, provider_options)] + ([] if provider == _PROVIDERS["cpu"] else [_PROVIDERS["cpu"]])
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
            if optimized.is_file():
                self.layer_precisions = layer_precisions(optimized)
                self.executed_precision = executed_of(self.layer_precisions)
            else:
                self.executed_precision = requested
        opts.optimized_model_filepath = ""  # the other streams' sessions: the same options, nothing saved
        self._open_another = lambda: ort.InferenceSession(str(onnx_path), opts, providers=providers)
        if self.session.get_providers()[0] != provider:
            raise MeasurementError(
                f"ONNX Runtime could not start {provider} (got {self.session.get_providers()}); "
                "install onnxruntime-gpu with matching CUDA/TensorRT libraries."
            )
        self.on_gpu = provider != _PROVIDERS["cpu"]

    def prepare(self, x: np.ndarray) -> Any:
        import onnxruntime as ort

        x = np.ascontiguousarray(x, dtype=np.float32)
        return ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0) if self.on_gpu else {INPUT: x}

    def run(self, prepared: Any) -> Any:
        if self.on_gpu:  # input already on the GPU: time the model, not the host-to-device copy
            return self.session.run_with_ort_values([OUTPUT], {INPUT: prepared})[0]
        return self.session.run([OUTPUT], prepared)[0]

    def to_numpy(self, outputs: Any) -> np.ndarray:
        return np.asarray(outputs.numpy() if hasattr(outputs, "numpy") else outputs, dtype=np.float32)

    def serve(self, x: np.ndarray, requests: int) -> list[Any]:
        """One lane per stream, each its own session: requests beyond the streams wait in the load generator's queue."""
        if self.streams == 1:  # the session's own run (on a GPU, with its input already there)
            return super().serve(x, requests)
        while len(self._more) < self.streams - 1:
            self._more.append(self._open_another())
        lanes = []
        for session in [self.session, *self._more]:
            feed = self.prepare(x)
            lanes.append(functools.partial(session.run, [OUTPUT], feed))
        return lanes

    def serving_settings(self) -> dict[str, Any]:
        return {
            "streams": self.streams,
            "sessions": 1 + len(self._more),
            "intra_op_threads": [
                int(s.get_session_options().intra_op_num_threads) for s in [self.session, *self._more]
            ],
        }

    def close(self) -> None:
        self._more.clear()
        del self.session  # frees the intra-op pool, whose threads otherwise keep spinning


class OrtPlacement(Placement):
    def __init__(self, device: str):
        super().__init__(f"ort-{device}")
        self.device = device
        self.provider = _PROVIDERS[device]

    def unavailable(self) -> str | None:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            return f"{self.name} needs onnxruntime's {self.provider}; install onnxruntime-gpu on a machine with a GPU"
        if self.device != "cpu" and not hardware.cuda_available():
            return f"{self.name} needs a CUDA GPU; none found"
        return None

    def refuse(self, precision: str) -> str | None:
        if self.device == "cpu" and precision in ("fp16", "bf16"):
            return (
                f"ONNX Runtime's CPU provider has no {precision} kernels for most ops (it would insert casts "
                "and run fp32); use torch-cpu for bf16, or int8/fp32 on ort-cpu"
            )
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
        assert onnx_path is not None
        options: dict[str, Any] = {}
        if self.device == "tensorrt":
            cache = onnx_path.parent / "trt"
            options = {
                "trt_fp16_enable": precision == "fp16",
                "trt_int8_enable": precision == "int8",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            }
        return OrtSession(onnx_path, self.provider, options, graph_opt, threads, precision, streams)
