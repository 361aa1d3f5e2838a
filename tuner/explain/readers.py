"""The three runtimes' own profilers, read into ``NodeTime``s: OpenVINO's PERF_COUNT, ONNX Runtime's Chrome trace,
and module hooks plus ``torch.profiler`` for eager torch (see ``tuner.explain.profile`` for how they are timed)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.explain.layers import EXECUTED, NOT_RUN, NodeTime
from tuner.explain.match import COMPUTE, REORDER, compute_sources, kind_of, module_of, module_of_fused, ort_source
from tuner.measure.latency import FAST_CLUSTER

if TYPE_CHECKING:
    import numpy as np

    from tuner.passes.chain import Built


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) / 1000.0  # us -> ms


def quiet_runs(totals: list[float]) -> list[int]:
    """The runs timed while the host left the call alone, as the latency figure keeps its fast cluster
    (``tuner.measure.latency.FAST_CLUSTER``): within 10% of the fastest run, and at least the faster half. Per-node
    medians and the total are then taken over the same runs, so that they add up on a contended host too."""
    bar = max(FAST_CLUSTER * min(totals), statistics.median(totals))
    return [i for i, t in enumerate(totals) if t <= bar]


# --- OpenVINO ---------------------------------------------------------------------------------------------------

_OV_PRECISIONS = {"i8": "int8", "u8": "int8", "f32": "fp32", "bf16": "bf16", "f16": "fp16", "i32": "int32"}
_OV_SKIP = {"Parameter", "Result", "Constant", "Const", "Input", "Output"}


def ov_precision(exec_type: str) -> str:
    """``brgconv_avx512_I8`` -> int8, ``jit_avx512_f32`` -> fp32, ``undef`` -> ''."""
    tail = exec_type.rsplit("_", 1)[-1].lower() if "_" in exec_type else ""
    return _OV_PRECISIONS.get(tail, "")


def _profile_openvino(
    built: Built, x: np.ndarray, warmup: int, repeats: int, modules: set[str] | None
) -> tuple[list[NodeTime], float]:
    from tuner.measure import open_session

    session = open_session(built)
    try:
        session.config = {**session.config, "PERF_COUNT": True}  # type: ignore[attr-defined]  # compiled in prepare
        prepared = session.prepare(x)
        request = prepared.request
        for _ in range(max(1, warmup)):
            session.run(prepared)
        # The CPU plugin's counters are each node's average over every call since compile (the first call's
        # one-off work included: weight repacking showed as 16 ms of a 0.01 ms FullyConnected): the mean over the
        # repeats is the difference of the sums before and after them.
        before = {i.node_name: i.real_time.total_seconds() * 1e6 for i in request.get_profiling_info()}
        walls = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            session.run(prepared)
            walls.append((time.perf_counter_ns() - t0) / 1e6)
        done, calls = max(1, warmup), max(1, warmup) + repeats
        means: dict[str, float] = {}
        meta: dict[str, tuple[str, str, bool]] = {}
        for info in request.get_profiling_info():
            after = info.real_time.total_seconds() * 1e6
            means[info.node_name] = max(0.0, (after * calls - before.get(info.node_name, 0.0) * done) / repeats)
            meta[info.node_name] = (info.node_type, info.exec_type, str(info.status).endswith("EXECUTED"))
        fused: dict[str, list[str]] = {}
        for op in request.get_compiled_model().get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "originalLayersNames" in rt:
                fused[op.get_friendly_name()] = rt["originalLayersNames"].astype(str).split(",")
    finally:
        session.close()
    nodes = []
    for name, (op, kernel, ran) in meta.items():
        if op in _OV_SKIP:
            continue
        kind = kind_of(op, name)
        module = (
            None if kind == "reorder" else (module_of(name, modules) or module_of_fused(fused.get(name, ()), modules))
        )
        nodes.append(
            NodeTime(
                name,
                op,
                kernel if kernel != "undef" else "",
                ov_precision(kernel),
                means[name] / 1000.0,
                EXECUTED if ran else NOT_RUN,
                module,
                kind,
            )
        )
    return nodes, statistics.fmean(walls)


# --- ONNX Runtime -----------------------------------------------------------------------------------------------

_ORT_TYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "uint8": "int8", "int8": "int8"}
_ORT_INT8_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
    "ConvInteger",
    "MatMulInteger",
    "QLinearAdd",
    "QLinearMul",
    "QLinearGlobalAveragePool",
    "QLinearAveragePool",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QLinearConcat",
    "QLinearSoftmax",
}


def ort_precision(op: str, input_types: list[dict[str, Any]]) -> str:
    """What an ORT node computed in: int8 for the quantized ops, else its first input's element type
    (Quantize/DequantizeLinear: what they read)."""
    if op in _ORT_INT8_OPS:
        return "int8"
    first = next(iter(input_types[0]), "") if input_types else ""
    return _ORT_TYPES.get(first, first)


def _profile_ort(
    built: Built, x: np.ndarray, warmup: int, repeats: int, modules: set[str] | None
) -> tuple[list[NodeTime], float]:
    import onnxruntime as ort

    from tuner.measure import open_session
    from tuner.names import INPUT, OUTPUT

    opened = open_session(built)  # the candidate's own session options, then the same with the profiler on
    try:
        opts = opened.session.get_session_options()  # type: ignore[attr-defined]
        providers = opened.session.get_providers()  # type: ignore[attr-defined]
    finally:
        opened.close()
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        opts.optimized_model_filepath = ""
        session = ort.InferenceSession(str(built.onnx_path), opts, providers=providers)
        feed = {INPUT: x}
        for _ in range(warmup):
            session.run([OUTPUT], feed)
        for _ in range(repeats):
            session.run([OUTPUT], feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        del session
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )[-repeats:]
    kept = quiet_runs([b - a for a, b in runs])
    times: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(runs))
    meta: dict[str, tuple[str, str, str]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        i = next((k for k, (a, b) in enumerate(runs) if a <= e["ts"] <= b), None)
        if i is None:
            continue  # a warm-up call
        name, args = e["name"][: -len("_kernel_time")], e.get("args", {})
        times[name][i] += e["dur"]
        op = args.get("op_name", "")
        meta[name] = (
            op,
            f"{op} ({args.get('provider', '').replace('ExecutionProvider', '')})",
            ort_precision(op, args.get("input_type_shape", [])),
        )
    sources = compute_sources(built.onnx_path) if built.onnx_path is not None else {}
    nodes = []
    for name, (op, kernel, precision) in meta.items():
        kind = kind_of(op, name)
        source = ort_source(name, sources) if kind == COMPUTE else name
        module = None if kind == REORDER else module_of(source, modules)
        nodes.append(
            NodeTime(name, op, kernel, precision, _median_us([times[name][i] for i in kept]), EXECUTED, module, kind)
        )
    return nodes, _median_us([runs[i][1] - runs[i][0] for i in kept])  # ORT's own model_run: the nodes' clock


# --- PyTorch ----------------------------------------------------------------------------------------------------

_RUN, _MODULE = "tuner::run", "tuner::module::"


def _torch_ranges(model: Any, dtypes: dict[str, str]) -> list[Any]:
    """A ``record_function`` range around every module's forward, named by its module path (for the kernels)."""
    import torch

    from tuner.names import PRECISION_OF_DTYPE

    handles, open_ranges = [], defaultdict(list)
    for name, m in model.named_modules():

        def pre(mod: Any, args: Any, name: str = name) -> None:
            if name not in dtypes and args and isinstance(args[0], torch.Tensor):
                params = [p.dtype for p in mod.parameters(recurse=False) if p.is_floating_point()]
                dtype = params[0] if params else args[0].dtype
                dtypes[name] = PRECISION_OF_DTYPE.get(str(dtype), str(dtype).replace("torch.", ""))
            r = torch.autograd.profiler.record_function(_MODULE + name)
            r.__enter__()
            open_ranges[name].append(r)

        def post(mod: Any, args: Any, out: Any, name: str = name) -> None:
            open_ranges[name].pop().__exit__(None, None, None)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _torch_clocks(model: Any, found: dict[str, float]) -> list[Any]:
    """Hooks that add each module's own time per call to ``found[name]`` (us): its forward's wall time less that of
    the modules it called, so a container keeps its own ops (a residual add) and the Python between its children."""
    stack: list[list[float]] = []  # per open module: [start ns, time of its children ns]
    handles = []
    for name, m in model.named_modules():

        def pre(mod: Any, args: Any) -> None:
            stack.append([time.perf_counter_ns(), 0.0])

        def post(mod: Any, args: Any, out: Any, name: str = name) -> None:
            t0, children = stack.pop()
            elapsed = time.perf_counter_ns() - t0
            if stack:
                stack[-1][1] += elapsed
            found[name] = found.get(name, 0.0) + (elapsed - children) / 1000.0

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles


def _kernel(event: Any) -> str:
    """The op that did a module's work: down the costliest child while it holds most of its parent's time
    (aten::conv2d -> ... -> aten::mkldnn_convolution), stopping above the bookkeeping ops (view, empty)."""
    while event.cpu_children:
        child = max(event.cpu_children, key=lambda c: c.time_range.elapsed_us())
        if not event.name.startswith(_MODULE) and child.time_range.elapsed_us() < 0.5 * event.time_range.elapsed_us():
            break  # the module's range itself always descends: the hooks' own Python is inside it
        event = child
    return event.name if not event.name.startswith(_MODULE) else ""


def _torch_kernels(session: Any, prepared: Any, model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Per module, the op that did its work and the dtype it ran in, from one call under ``torch.profiler``."""
    from torch.profiler import ProfilerActivity, profile

    dtypes: dict[str, str] = {}
    handles = _torch_ranges(model, dtypes)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            session.run(prepared)
    finally:
        for h in handles:
            h.remove()
    kernels: dict[str, str] = {}
    for e in prof.events():
        if e.name.startswith(_MODULE):
            own = [c for c in e.cpu_children if not c.name.startswith(_MODULE)]
            if any(c.name.startswith(_MODULE) for c in e.cpu_children):  # a container: its own ops, if any
                kernels.setdefault(e.name[len(_MODULE) :], ", ".join(dict.fromkeys(c.name for c in own)))
            else:
                kernels.setdefault(e.name[len(_MODULE) :], _kernel(e))
    return kernels, dtypes


def _profile_torch(
    built: Built, x: np.ndarray, warmup: int, repeats: int, modules: set[str] | None
) -> tuple[list[NodeTime], float]:
    from tuner.measure import open_session

    session = open_session(built)
    try:
        model = session.model  # type: ignore[attr-defined]
        prepared = session.prepare(x)
        for _ in range(warmup):
            session.run(prepared)
        per_run: list[dict[str, float]] = []
        walls = []
        for _ in range(repeats):
            found: dict[str, float] = {}
            handles = _torch_clocks(model, found)
            t0 = time.perf_counter_ns()
            session.run(prepared)
            walls.append((time.perf_counter_ns() - t0) / 1e6)
            for h in handles:
                h.remove()
            per_run.append(found)
        kernels, dtypes = _torch_kernels(session, prepared, model)  # after the timing: nothing of it lingers there
    finally:
        session.close()
    kept = quiet_runs(walls)
    leaves = {name for name, m in model.named_modules() if not any(True for _ in m.children())}
    types = {name: type(m).__name__ for name, m in model.named_modules()}
    nodes = []
    for name, _ in model.named_modules():
        if name not in per_run[0]:
            continue  # not called (a dropped block's identity is still called)
        leaf = name in leaves
        op = types[name] if leaf else f"{types[name]} (own ops + Python)"
        module = (name or None) if modules is None or name in modules else None
        nodes.append(
            NodeTime(
                name or "(model forward)",
                op,
                kernels.get(name, ""),
                dtypes.get(name, ""),
                _median_us([per_run[i].get(name, 0.0) for i in kept]),
                EXECUTED,
                module,
                kind_of(types[name]) if leaf else "other",
            )
        )
    return nodes, statistics.median(walls[i] for i in kept)


READERS: dict[str, Callable[..., tuple[list[NodeTime], float]]] = {
    "ov-cpu": _profile_openvino,
    "ort-cpu": _profile_ort,
    "torch-cpu": _profile_torch,
}
COUNTED = {
    "ov-cpu": (
        "OpenVINO's real time per node (PERF_COUNT), one stream: nodes run one after another; its counters "
        "are averages since compile, so each node's figure and the total are means over the repeats"
    ),
    "ort-cpu": (
        "ONNX Runtime's kernel time per node (enable_profiling), sequential executor; the total is its model_run"
    ),
    "torch-cpu": (
        "each module's own wall time per call (forward hooks: a container's own ops and the Python between "
        "its children count as its own), kernels and dtypes from one torch.profiler call"
    ),
}
