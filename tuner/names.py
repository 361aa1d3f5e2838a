"""The project's names in one torch-free table: precisions, placements, artifact kinds, I/O names, file names.

Everything here is plain data, so that ``Candidate``, the search space, the report and the CLI can validate
and show names without loading torch or a runtime. What a placement can do *on this machine* is the
runtimes' business (``tuner.runtimes``); what it is, is written here once.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
GRAPH_OPTS = ("disable", "basic", "extended", "all")  # ONNX Runtime graph optimization levels
CALIBRATIONS = ("minmax", "entropy", "percentile")  # how int8 activation ranges are chosen (ORT's calibrators)
# Which ops int8 quantizes: all that ORT's quantizer takes (activations stay int8 from layer to layer), or only the
# inputs of the compute layers (Conv, Gemm, MatMul; everything between them runs float). tuner.passes.qdq says why.
INT8_OPS = ("all", "compute")
PRUNE_PROFILES = ("uniform", "global")  # how a prune ratio is spread over the layers (tuner.passes.prune)
# An accuracy drop is in percentage points of the metric (100 x the reference's value minus the trial's) wherever a
# user reads or writes one: --max-drop, best(max_drop=), objectives files, the DataFrame, report and exports.
DROP_UNIT = "points"
RECOVERY_FIDELITIES = ("short", "long")  # recovery budgets (tuner.passes.recover); long only for front contenders

# Precision -> the torch dtype's attribute name (torch.float32, ...): the one dtype map. int8 never runs in torch.
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PRECISION_OF_DTYPE = {f"torch.{v}": k for k, v in TORCH_DTYPES.items()}  # str(torch.bfloat16) -> "bf16"

# Artifact kinds: what a placement asks the builder for.
TORCH_MODULE, ONNX_FP32, ONNX_FP16, ONNX_INT8 = "torch", "onnx-fp32", "onnx-fp16", "onnx-int8"

# The model's input and output names in every ONNX file and export.
INPUT, OUTPUT = "input", "logits"

# Files of an export directory (tuner export / verify).
EXPORT_FORMAT = "tuner-export/1"
CONFIG_FILE, ONNX_FILE, PROGRAM_FILE, STATE_FILE = "config.yaml", "model.onnx", "model.pt2", "state_dict.pt"
IR_XML_FILE, IR_BIN_FILE = "model.xml", "model.bin"  # the OpenVINO IR of an ov-cpu export, beside its ONNX
README_FILE = "README.md"  # how to load and run the export in its runtime

# Export kinds: the form an export saves its model in (config.yaml's artifact.kind), one module each under
# tuner/artifact/kinds/ (tuner.artifact.kinds.registry).
EXPORT_ONNX, EXPORT_OPENVINO_IR, EXPORT_TORCH_PROGRAM, EXPORT_STATE_DICT = (
    "onnx",
    "openvino-ir",
    "torch.export",
    "state_dict",
)


@dataclass(frozen=True)
class PlacementInfo:
    """What a placement is: its runtime and device, the precisions it runs somewhere, the artifact each needs."""

    name: str
    runtime: str  # torch | ort | openvino
    device: str  # cpu | cuda | tensorrt
    artifacts: dict[str, str]  # precision -> artifact kind

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(self.artifacts)

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"


def _onnx(precisions: tuple[str, ...], fp16_file: bool = False) -> dict[str, str]:
    kind = {
        "fp32": ONNX_FP32,
        "int8": ONNX_INT8,
        "fp16": ONNX_FP16 if fp16_file else ONNX_FP32,
        "bf16": ONNX_FP32,
    }  # OpenVINO runs bf16 from the fp32 file; TensorRT builds fp16 engines itself
    return {p: kind[p] for p in precisions}


PLACEMENTS: dict[str, PlacementInfo] = {
    p.name: p
    for p in (
        PlacementInfo("torch-cpu", "torch", "cpu", dict.fromkeys(("fp32", "bf16"), TORCH_MODULE)),
        PlacementInfo("ort-cpu", "ort", "cpu", _onnx(("fp32", "int8"))),
        PlacementInfo("torch-cuda", "torch", "cuda", dict.fromkeys(("fp32", "fp16", "bf16"), TORCH_MODULE)),
        PlacementInfo("ort-cuda", "ort", "cuda", _onnx(("fp32", "fp16", "int8"), fp16_file=True)),
        PlacementInfo("ort-tensorrt", "ort", "tensorrt", _onnx(("fp32", "fp16", "int8"))),
        PlacementInfo("ov-cpu", "openvino", "cpu", _onnx(("fp32", "bf16", "int8"))),
    )
}


def artifact_kind(placement: str, precision: str) -> str:
    """The artifact ``placement`` runs ``precision`` from (KeyError for a combination it never runs)."""
    return PLACEMENTS[placement].artifacts[precision]


# The figures measured under load (tuner.measure.load), only in studies whose objectives or constraints use one.
LOAD_METRICS = (
    "load_throughput",
    "load_p50_ms",
    "load_p95_ms",
    "load_p99_ms",
    "open_throughput",
    "open_p50_ms",
    "open_p95_ms",
    "open_p99_ms",
)
