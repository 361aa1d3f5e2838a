"""A per-layer profile of a built candidate, from its runtime's own profiler.

OpenVINO: the compiled model with ``PERF_COUNT`` on, ``InferRequest.get_profiling_info()`` after each call (per node:
type, the kernel chosen and its precision in ``exec_type``, real time, executed or not). ONNX Runtime: a second
session with the candidate's own options and ``enable_profiling``; ``end_profiling()`` writes a Chrome trace with
each node's time per run. PyTorch: ``torch.profiler`` with a ``record_function`` range around every module's forward
(``with_modules`` records module scopes for TorchScript only, not eager modules).

Timed under the latency figure's rules: warm-up first, then ``repeats`` profiled calls on a real validation batch,
the median per node across the runs the host left alone (``quiet_runs``; OpenVINO: the mean over all, see there). The end-to-end figure beside it is the same session's call timed without the
profiler (``tuner.measure.time_session``, a short budget); ``total_ms`` is the profiled call (median; OpenVINO: mean). Per-node times
are each node's wall time; the runtimes run the nodes of one request one after another (OpenVINO one stream,
ORT's sequential executor, eager torch), each node parallel inside over the candidate's threads, so the node times
add up, and what is left of the profiled call is outside every node: the runtime's own dispatch, input and output
copies, and for torch the Python between modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.errors import UnsupportedCombination
from tuner.explain.layers import LayerProfile
from tuner.explain.match import onnx_channels, torch_channels
from tuner.explain.readers import COUNTED, READERS
from tuner.measure.latency import LatencyPolicy

if TYPE_CHECKING:
    from collections.abc import Iterable

    from tuner.dataset import Dataset
    from tuner.passes.chain import Built

QUICK = LatencyPolicy(min_seconds=0.5, max_seconds=1.0, max_wait_seconds=0.5)  # the end-to-end figure beside a profile


def refuse(placement: str) -> str | None:
    """Why a placement is not profiled here, or None."""
    if placement in READERS:
        return None
    return (
        f"{placement} is not profiled per layer: tuner explain reads the profilers of ov-cpu, ort-cpu and "
        f"torch-cpu (CUDA and TensorRT kernels run asynchronously; their profilers are not wired in)"
    )


def profile(
    built: Built,
    data: Dataset,
    repeats: int = 30,
    warmup: int = 5,
    policy: LatencyPolicy = QUICK,
    modules: Iterable[str] | None = None,
) -> LayerProfile:
    """The per-layer profile of ``built`` on a batch of real validation images. ``modules``: the model's module
    names, to match runtime nodes against (default: the built torch module's; an ONNX build reads them from its
    node names alone)."""
    from tuner.measure import open_session, resolve_threads, time_session

    c = built.candidate
    if (why := refuse(c.placement)) is not None:
        raise UnsupportedCombination(why + ".")
    if repeats < 1:
        raise ValueError(f"`repeats >= 1` must hold, but got {repeats=}.")
    threads = resolve_threads(c.threads, c.streams)
    session = open_session(built)
    try:
        latency = time_session(session, data, c.batch_size, threads, policy)
    finally:
        session.close()
    known = set(modules) if modules is not None else None
    if built.model is not None:
        known = {n for n, _ in built.model.named_modules()}
        channels = torch_channels(built.model)
    else:
        assert built.onnx_path is not None
        channels = onnx_channels(built.onnx_path)
    nodes, total_ms = READERS[c.placement](built, data.example(c.batch_size), warmup, repeats, known)
    return LayerProfile(
        c.placement,
        c.precision,
        c.batch_size,
        threads,
        repeats,
        tuple(nodes),
        total_ms,
        latency.median_ms,
        COUNTED[c.placement],
        channels,
    )
