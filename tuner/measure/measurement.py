"""Measure a built candidate in its real runtime: accuracy, latency, size, executed precision.

``open_session``, ``time_session`` and ``serve_session`` are the one path to open, time and load an artifact: the
study's trials, the re-measure's fresh processes, export and verify all go through them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuner import guardrails, hardware, progress
from tuner.measure import host
from tuner.measure.accuracy import top1
from tuner.measure.latency import LatencyPolicy, LatencyStats, time_calls
from tuner.measure.load import LoadPolicy, run_load
from tuner.names import LOAD_METRICS
from tuner.runtimes.base import describe_precisions
from tuner.runtimes.registry import PLACEMENTS

if TYPE_CHECKING:
    import numpy as np

    from tuner.candidate import Candidate
    from tuner.corruptions import Corrupted
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built
    from tuner.runtimes.base import Session


@dataclass(frozen=True)
class Metrics:
    accuracy: float  # top-1 on the whole validation split, 0..1
    latency_ms: float  # median per batch
    latency_p95_ms: float
    latency_ci_ms: tuple[float, float]  # 95% CI of the median
    samples: int  # timed calls behind the latency figures
    latency_contended_share: float  # share of timed blocks during which the host probe found a CPU contended
    latency_quiet: bool  # False: the host never went quiet within the budget; the figures include contention
    host_reference_ms: float | None  # the host probe's full-speed canary time (handed to re-measure processes)
    per_sample_ms: float  # median per batch / batch size
    throughput: float  # samples per second at the median
    batch_size: int
    params: int
    macs: int  # per sample
    size_mb: float  # artifact size
    compressed_mb: float  # artifact size deflated (zlib 6): what shipping it costs; where weight sparsity pays
    executed_precision: str  # as read back from the runtime
    layer_precisions: str  # compute layers per executed precision ("int8 18 / fp32 3"), where the runtime says
    float_layers: tuple[str, ...]  # int8 builds: the layers kept in float by sensitivity
    threads: int  # per stream
    measure_seconds: float  # wall time of this measurement (accuracy + latency, and the load where measured)
    dropped_blocks: tuple[str, ...] = ()  # a derived student's blocks replaced by the identity
    recovery: dict[str, Any] | None = None  # the distillation that recovered a compressed model (RecoveryRecord)
    streams: int = 1  # requests run at once
    requests: int = 1  # requests in flight in the closed loop
    # Under load (tuner.measure.load), where the study's objectives use it (else None): per request = one batch.
    load_throughput: float | None = None  # samples/s answered in the closed loop (`requests` in flight): capacity
    load_p50_ms: float | None = None  # the closed loop's latency per request, over every request
    load_p95_ms: float | None = None
    load_p99_ms: float | None = None
    open_throughput: float | None = None  # samples/s answered in the open loop (Poisson arrivals)
    open_p50_ms: float | None = None  # the open loop's latency per request, queueing included
    open_p95_ms: float | None = None
    open_p99_ms: float | None = None
    load: dict[str, Any] | None = None  # the whole record: closed / open LoadStats, the runtime's serving settings
    accuracy_seconds: float | None = None  # opening the session and the accuracy pass (the rest of measure_seconds:
    # latency, and the load where measured)
    # Against the baseline's predictions, where given (tuner.guardrails.figures): flattened into the dict.
    guardrails: dict[str, Any] | None = None
    # Top-1 on the corruption set, where asked (tuner.measure.robustness.corruption_top1): flattened into the dict.
    corruption: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(d.pop("guardrails") or {})
        d.update(d.pop("corruption") or {})
        d["latency_ci_ms"] = list(self.latency_ci_ms)
        d["float_layers"] = list(self.float_layers)
        d["dropped_blocks"] = list(self.dropped_blocks)
        if self.load is None:  # not measured under load: the record stays what it was before loads were measured
            for key in (*LOAD_METRICS, "load"):
                del d[key]
        return d


def resolve_threads(threads: int, streams: int = 1) -> int:
    """Intra-op threads per stream (0: the machine's cores shared out among the streams)."""
    return hardware.threads_per_stream(threads, streams)


def open_session(built: Built) -> Session:
    """The built artifact loaded in its candidate's runtime, configured as the candidate says."""
    c = built.candidate
    return PLACEMENTS[c.placement].open(
        built.model, built.onnx_path, c.precision, c.graph_opt, resolve_threads(c.threads, c.streams), c.streams
    )


def serve_session(
    session: Session, data: Dataset, candidate: Candidate, policy: LoadPolicy | None = None
) -> dict[str, Any]:
    """The candidate under load (``tuner.measure.load``) on a batch of real validation images: the closed loop at its
    requests in flight, then the open loop; the flat figures of ``Metrics`` plus the whole record under ``load``."""
    c = candidate
    lanes = session.serve(data.example(c.batch_size), c.in_flight)
    threads = resolve_threads(c.threads, c.streams) * c.streams
    policy = policy or LoadPolicy()
    closed, opened = run_load(lanes, c.batch_size, c.in_flight, threads, policy)
    record = {
        "closed": closed.to_dict(),
        "open": opened.to_dict(),
        "serving": session.serving_settings(),
        "lanes": len(lanes),
        "quiet": closed.quiet and opened.quiet,
        "policy": {"utilisation": policy.utilisation, "open_rate": policy.open_rate},
    }
    return {
        "load_throughput": closed.throughput,
        "load_p50_ms": closed.p50_ms,
        "load_p95_ms": closed.p95_ms,
        "load_p99_ms": closed.p99_ms,
        "open_throughput": opened.throughput,
        "open_p50_ms": opened.p50_ms,
        "open_p95_ms": opened.p95_ms,
        "open_p99_ms": opened.p99_ms,
        "load": record,
    }


def time_session(
    session: Session,
    data: Dataset,
    batch_size: int,
    threads: int,
    policy: LatencyPolicy = LatencyPolicy(),
    warm_for: float = 0.0,
) -> LatencyStats:
    """Time ``session.run`` on a prepared batch of real validation images (prepared outside the timed loop).
    ``warm_for`` seconds of calls first stand in for an accuracy pass where none ran before."""
    prepared = session.prepare(data.example(batch_size))
    end = time.perf_counter() + warm_for
    while time.perf_counter() < end:
        session.run(prepared)
    return time_calls(session.run, prepared, policy, threads=threads)


def holdout_accuracy(built: Built, data: Dataset, tally: guardrails.Tally | None = None) -> float | None:
    """Top-1 of the built artifact on the held-out split, which the search never saw (None: no split kept);
    ``tally`` collects its predictions there."""
    if data.holdout is None:
        return None
    session = open_session(built)
    try:
        return top1(session, data, built.candidate.batch_size, split=data.holdout, tally=tally)
    finally:
        session.close()


def measure(
    built: Built,
    data: Dataset,
    policy: LatencyPolicy = LatencyPolicy(),
    min_accuracy: float | None = None,
    keep_logits: list[np.ndarray] | None = None,
    load: LoadPolicy | None = None,
    baseline: guardrails.Predictions | None = None,
    limits: dict[str, float] | None = None,
    corrupted: Corrupted | None = None,
    min_corruption: float | None = None,
) -> Metrics:
    """Accuracy and single-call latency; ``keep_logits`` collects the validation logits, batch by batch
    (``tuner.measure.accuracy.top1``); with ``load``, the figures under load too (``serve_session``); with the
    ``baseline``'s validation predictions, the guardrail figures against it (stopped early past ``limits``); with
    ``corrupted``, top-1 on the corruption set too (stopped early below ``min_corruption``)."""
    c = built.candidate
    threads = resolve_threads(c.threads, c.streams)
    start = time.perf_counter()
    tally = guardrails.Tally(baseline, limits) if baseline is not None else None
    session = open_session(built)
    try:
        with progress.stage("accuracy"):  # first: a hopeless one skips timing
            accuracy = top1(session, data, c.batch_size, min_accuracy, keep=keep_logits, tally=tally)
        accuracy_seconds = time.perf_counter() - start
        robust = None
        if corrupted is not None:  # before timing too: a trial bound to break corruption_drop skips it
            from tuner.measure.robustness import corruption_top1

            with progress.stage("corruptions"):
                robust = corruption_top1(session, data, corrupted, c.batch_size, min_corruption)
        with progress.stage("latency"):
            lat = time_session(session, data, c.batch_size, threads, policy)
            served = serve_session(session, data, c, load) if load is not None else {}
        executed = session.executed_precision
        layers = describe_precisions(session.layer_precisions)
    finally:
        session.close()
    guards = None if tally is None or baseline is None else guardrails.figures(tally.predictions(), baseline)
    return Metrics(
        accuracy=accuracy,
        latency_ms=lat.median_ms,
        latency_p95_ms=lat.p95_ms,
        latency_ci_ms=(lat.ci_low_ms, lat.ci_high_ms),
        samples=lat.samples,
        latency_contended_share=lat.contended_share,
        latency_quiet=lat.quiet,
        host_reference_ms=host.reference_ms(),
        per_sample_ms=lat.median_ms / c.batch_size,
        throughput=1000.0 * c.batch_size / lat.median_ms,
        batch_size=c.batch_size,
        params=built.params,
        macs=built.macs,
        size_mb=built.artifact_mb,
        compressed_mb=built.compressed_mb,
        executed_precision=executed,
        layer_precisions=layers,
        float_layers=built.float_layers,
        threads=threads,
        measure_seconds=time.perf_counter() - start,
        dropped_blocks=tuple(built.compression.get("dropped_blocks", ())),
        recovery=built.compression.get("recovery"),
        streams=c.streams,
        requests=c.in_flight,
        accuracy_seconds=accuracy_seconds,
        **served,
        guardrails=guards,
        corruption=robust,
    )
