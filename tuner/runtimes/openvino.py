"""OpenVINO on CPU: fp32 / bf16 from the fp32 ONNX file, int8 from the same calibrated QDQ ONNX file as ort-cpu.
An export's OpenVINO IR (``model.xml`` + ``model.bin``, ``save_ir``) opens the same way: ``read_model`` takes both.

* The precision is always set explicitly (``INFERENCE_PRECISION_HINT``): left alone, the CPU plugin
  silently runs an fp32 model in bf16 on CPUs with BF16 instructions. Uniform int8 runs with an f32 hint, so
  whatever the QDQ graph leaves in float (adds, pooling) runs in fp32 as it does on ort-cpu. A mixed-precision
  int8 graph (layers with float weights: ``float_layers``) runs with a bf16 hint where this CPU has BF16: its
  int8 layers stay int8 and the float ones run in bf16, not fp32 (measured here, resnet18 pruned 0.8 at 96 px,
  1 thread: conv1 and fc kept in float cost +46% over uniform int8 in fp32, +14% in bf16).
* The executed precision is read back from the compiled model: the runtime precision of its compute
  nodes (Convolution, FullyConnected, MatMul, ...), so a QDQ graph OpenVINO did not run in int8 is
  reported as what it ran; the precision hint read back is the fallback when no compute node is found.
* Shapes are static: the model is reshaped to the batch it is given and compiled then (``prepare``
  is not timed). A smaller batch (the accuracy loop's last one) is zero-padded to the compiled batch
  and the outputs sliced back; a larger batch compiles the model once more at that size.
* ``graph_opt`` does not apply: OpenVINO always runs its own graph transformations (fusions, QDQ
  folding into int8 kernels, layout choice) and has no knob to turn them down; the value is ignored.
* ``PERFORMANCE_HINT=LATENCY`` (one stream) and ``INFERENCE_NUM_THREADS`` = the candidate's threads; the whole
  compile config is ``compile_config`` (an export records it, and its README passes it as is). Several streams:
  ``PERFORMANCE_HINT=THROUGHPUT`` with ``NUM_STREAMS`` and ``INFERENCE_NUM_THREADS`` (the threads of all streams
  together) set explicitly and read back from the compiled model; one the plugin did not honour fails the
  measurement with both values. Under load each request in flight is an infer request of its own (``serve``):
  OpenVINO runs ``NUM_STREAMS`` of them at once and queues the rest, as its ``AsyncInferQueue`` does.
* ``ENABLE_CPU_PINNING`` is on only where the candidate's threads (all streams') cover every CPU this process may
  run on. Otherwise it is off: the plugin pins its threads to cores of its choosing, whether or not another tenant
  loads them, and re-pins them as they enter its arena, undoing the timing's move onto the quietest CPUs
  (``tuner.measure.host.QuietestCpus``; seen on OpenVINO 2026.4: a 1-thread model's threads were back on both CPUs
  after a few calls). Where there is no subset to choose, unpinned threads are worse: the OS now and then puts two
  of them on one CPU for a whole process (measured here, resnet18 int8 at 224 px, 2 streams x 1 thread on 2 CPUs,
  fresh processes: unpinned 495-926 requests/s and open-loop p95 5.4-8.5 ms; pinned 874-907/s and 4.9-5.2 ms).
* OpenVINO's usage telemetry is kept out (``_openvino``): ``import openvino`` otherwise spawns a whole Python
  process to post an event, which competes for the CPUs while the first candidate is timed.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuner import hardware
from tuner.errors import MeasurementError
from tuner.runtimes.base import Placement, Session

if TYPE_CHECKING:
    from torch import nn

DEVICE = "CPU"
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the non-quantized remainder runs fp32 ...
MIXED_HINT = "bf16"  # ... except layers kept in float (float_layers), which run bf16 where the CPU has it
_PRECISION_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8"}
# CPU-plugin layer types that carry the MACs; their runtime precision is what the model executes in.
_COMPUTE = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul", "Gemm"}


def _openvino() -> Any:
    """``import openvino`` without its usage telemetry.

    On import, openvino (via ``openvino.tools.ovc``) sends an event through ``openvino_telemetry``, which on
    Linux starts a ``multiprocessing`` child (a fresh interpreter that re-imports the caller's main module)
    and waits for it in a background thread. Measured here: that child burned a CPU for seconds while the
    first OpenVINO candidate of each process was timed (ov-cpu int8, 2 threads: 0.61 ms instead of 0.39),
    and the host probe cannot see it (it shares a CPU by time slices; it does not slow the core). With the
    module hidden, openvino falls back to its own no-op telemetry stub. Only this process is affected; the
    user's opt-in file is left alone.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "cannot be imported"
    import openvino

    return openvino


@functools.lru_cache(maxsize=1)
def _core() -> Any:
    return _openvino().Core()


def runtime_precisions(compiled: Any) -> dict[str, int]:
    """The compute nodes of a compiled model per precision they execute in (fp32 | fp16 | bf16 | int8)."""
    found: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        if "layerType" not in rt or rt["layerType"].astype(str) not in _COMPUTE:
            continue
        precision = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else ""
        if precision in _PRECISION_NAMES:
            found[_PRECISION_NAMES[precision]] = found.get(_PRECISION_NAMES[precision], 0) + 1
    return found


def hint_precision(compiled: Any) -> str:
    """The INFERENCE_PRECISION_HINT the compiled model ended up with, as fp32 | fp16 | bf16."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return _PRECISION_NAMES.get(name, name)


def compile_config(
    precision: str, threads: int, streams: int = 1, cpus: int | None = None, float_layers: bool = False
) -> dict[str, Any]:
    """The CPU plugin's compile config for a candidate (``threads`` per stream): what every ov-cpu session compiles
    with. One stream: the LATENCY hint, as before streams were searched; several: THROUGHPUT, their number explicit.
    Pinned where the threads cover all ``cpus`` (default: the CPUs this process may run on; see the module doc).
    ``float_layers``: an int8 graph with layers kept in float, which run bf16 where the CPU has it."""
    hint = MIXED_HINT if precision == "int8" and float_layers and hardware.native_bf16() else HINTS[precision]
    pin = int(threads) * int(streams) >= (cpus or hardware.cores())
    if streams == 1:
        return {
            "INFERENCE_PRECISION_HINT": hint,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads),
            "ENABLE_CPU_PINNING": pin,
        }
    return {
        "INFERENCE_PRECISION_HINT": hint,
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": int(streams),
        "INFERENCE_NUM_THREADS": int(threads) * int(streams),
        "ENABLE_CPU_PINNING": pin,
    }


def has_float_layers(model: Any) -> bool:
    """Whether a QDQ model (``ov.Model`` as read) keeps compute layers in float: a convolution or matmul whose
    weights are a float constant, beside others whose weights are not (dequantized int8). Asked of int8 builds
    only: in a float model, attention's activation-by-activation matmuls would count as the others."""
    float_weights = int8_weights = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        source = op.input_value(1).get_node()
        if source.get_type_name() == "Constant":
            float_weights += source.get_element_type().is_real()
        else:
            int8_weights += 1  # a dequantization (Convert/Subtract/Multiply of an int8 constant), or activations
    return float_weights > 0 and int8_weights > 0


def read_back(compiled: Any) -> dict[str, int]:
    """The streams, threads and optimal number of infer requests the compiled model ended up with."""
    return {
        "NUM_STREAMS": int(compiled.get_property("NUM_STREAMS")),
        "INFERENCE_NUM_THREADS": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "OPTIMAL_NUMBER_OF_INFER_REQUESTS": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
    }


def model_config(model: Any, precision: str, threads: int, streams: int = 1) -> dict[str, Any]:
    """``compile_config`` for this ``ov.Model``, its float layers read from the graph: the one rule by which a
    session compiles an ONNX file and an export records the config of the IR saved from it."""
    return compile_config(precision, threads, streams, float_layers=precision == "int8" and has_float_layers(model))


def read_model(path: Path) -> Any:
    """An ONNX file or an IR ``.xml`` as an ``ov.Model``."""
    return _core().read_model(str(path))


def save_ir(onnx_path: Path, xml_path: Path) -> None:
    """The ONNX file as an OpenVINO IR (``xml_path`` and the ``.bin`` beside it), weights kept in their precision
    (no fp16 compression: the IR runs what the ONNX file ran, int8 QDQ included)."""
    ov = _openvino()
    ov.save_model(read_model(onnx_path), str(xml_path), compress_to_fp16=False)


@dataclass
class _Prepared:
    request: Any  # the infer request of the compiled model this batch runs on
    inputs: dict[int, np.ndarray]
    n: int  # real rows; the rest is padding


class OpenVinoSession(Session):
    def __init__(self, model_path: Path, precision: str, threads: int, streams: int = 1):
        """``model_path``: an ONNX file or an OpenVINO IR ``.xml`` (its ``.bin`` beside it)."""
        ov = _openvino()
        self.model = read_model(model_path)
        if len(self.model.inputs) != 1:
            raise ValueError(f"{model_path} has {len(self.model.inputs)} inputs; ov-cpu runs single-input models")
        self.input_name = self.model.inputs[0].get_any_name()
        self.input_shape = self.model.inputs[0].get_partial_shape()
        self.config = model_config(self.model, precision, threads, streams)
        self.requested, self.streams = precision, streams
        self._ov = ov
        self._compiled: dict[int, Any] = {}  # batch size -> compiled model
        self._requests: dict[int, Any] = {}
        self._lanes: list[Any] = []  # the infer requests of the load generator's lanes (serve)

    def _compile(self, batch: int) -> None:
        shape = self._ov.PartialShape([batch, *list(self.input_shape)[1:]])
        model = self.model.clone()
        model.reshape({self.input_name: shape})
        compiled = _core().compile_model(model, DEVICE, self.config)
        got = read_back(compiled)
        for key in ("NUM_STREAMS", "INFERENCE_NUM_THREADS"):
            if key in self.config and got[key] != self.config[key]:
                raise MeasurementError(
                    f"OpenVINO compiled {key}={got[key]}, not the {self.config[key]} asked for; "
                    "this machine cannot run that many: use fewer streams or threads"
                )
        self._compiled[batch] = compiled
        self._requests[batch] = compiled.create_infer_request()

    def _batch_for(self, n: int) -> int:
        """The smallest compiled batch that holds ``n`` rows, compiling one for ``n`` if none does."""
        fits = [b for b in self._compiled if b >= n]
        if not fits:
            self._compile(n)
            return n
        return min(fits)

    @property
    def layer_precisions(self) -> dict[str, int]:  # type: ignore[override]
        """Compute nodes per executed precision, of the model compiled for the first batch size."""
        if not self._compiled:
            self._compile(1)
        compiled = next(iter(self._compiled.values()))
        return runtime_precisions(compiled) or {hint_precision(compiled): 1}

    @property
    def executed_precision(self) -> str:  # type: ignore[override]
        if not self._compiled:
            self._compile(1)
        kinds: set[str] = set()
        for compiled in self._compiled.values():
            kinds |= set(runtime_precisions(compiled)) or {hint_precision(compiled)}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @property
    def inference_precision_hint(self) -> str:
        """The hint as read back from the compiled model (fp32 | bf16 | ...)."""
        if not self._compiled:
            self._compile(1)
        return hint_precision(next(iter(self._compiled.values())))

    def prepare(self, x: np.ndarray) -> _Prepared:
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = x.shape[0]
        batch = self._batch_for(n)
        if batch > n:
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), np.float32)])
        return _Prepared(self._requests[batch], {0: x}, n)

    def run(self, prepared: _Prepared) -> Any:
        prepared.request.infer(prepared.inputs, share_inputs=True, share_outputs=True)
        return prepared

    def to_numpy(self, outputs: Any) -> np.ndarray:
        logits = outputs.request.get_output_tensor(0).data
        return np.array(logits[: outputs.n], dtype=np.float32)  # a copy: the next infer reuses the buffer

    def serve(self, x: np.ndarray, requests: int) -> list[Any]:
        """One lane per request in flight, each an infer request of its own on the model compiled for this batch."""
        if self.streams == 1 and requests == 1:
            return super().serve(x, requests)
        first = self.prepare(x)
        compiled = self._compiled[len(first.inputs[0])]
        self._lanes = [compiled.create_infer_request() for _ in range(requests)]
        return [
            functools.partial(r.infer, dict(first.inputs), share_inputs=True, share_outputs=True) for r in self._lanes
        ]

    def serving_settings(self) -> dict[str, Any]:
        if not self._compiled:
            self._compile(1)
        return {
            "streams": self.streams,
            **read_back(next(iter(self._compiled.values()))),
            "infer_requests": len(self._lanes) or 1,
        }

    def close(self) -> None:
        self._lanes.clear()
        self._requests.clear()  # frees the streams executor's threads
        self._compiled.clear()


class OpenVinoPlacement(Placement):
    def __init__(self) -> None:
        super().__init__("ov-cpu")

    def unavailable(self) -> str | None:
        try:
            _openvino()
        except ImportError as err:
            return f"ov-cpu needs the openvino package ({err}); pip install openvino"
        return None

    def refuse(self, precision: str) -> str | None:
        if precision == "bf16" and (why := hardware.bf16_refusal(self.name)):
            return why
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
        assert onnx_path is not None  # the ONNX file, or an export's IR .xml
        return OpenVinoSession(onnx_path, precision, threads, streams)  # graph_opt: no OpenVINO equivalent, ignored
