"""ov-cpu: real OpenVINO on the shared tiny workload, executed precision read back, no mocks."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tuner import hardware
from tuner.candidate import Candidate
from tuner.errors import UnsupportedCombination
from tuner.measure import measure
from tuner.measure.latency import LatencyPolicy
from tuner.passes.chain import build
from tuner.runtimes.registry import PLACEMENTS, check_supported
from tuner.space import load_space

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

if PLACEMENTS["ov-cpu"].unavailable():  # imports openvino the tuner's way (see the telemetry test)
    pytest.skip(PLACEMENTS["ov-cpu"].unavailable(), allow_module_level=True)
QUICK = LatencyPolicy(warmup=2, min_samples=10, max_samples=30, max_seconds=0.5)


def test_fp32_executes_in_f32_read_back(workload):
    built = build(workload, Candidate(placement="ov-cpu", threads=1))
    session = PLACEMENTS["ov-cpu"].open(None, built.onnx_path, "fp32", "all", 1)
    try:
        x = workload.data.example(3)
        logits = session.predict(x)
        assert logits.shape == (3, workload.data.num_classes)
        # The explicit hint and the compute nodes both say f32 (never bf16, even on a BF16 CPU).
        assert session.inference_precision_hint == "fp32"
        assert session.executed_precision == "fp32"
        # Same numbers as ONNX Runtime on the same file.
        reference = PLACEMENTS["ort-cpu"].open(None, built.onnx_path, "fp32", "all", 1)
        np.testing.assert_allclose(logits, reference.predict(x), atol=1e-3, rtol=1e-3)
        reference.close()
    finally:
        session.close()
    m = measure(built, workload.data, QUICK)
    assert m.executed_precision == "fp32" and m.latency_ms > 0 and m.samples >= 10


def test_static_batch_handles_the_partial_last_batch(workload):
    """A batch smaller than the compiled one is zero-padded and sliced back: the same rows as in a full batch;
    end to end, batch 32 over the validation split (not a multiple of 32) scores as batch 1 does."""
    built = build(workload, Candidate(placement="ov-cpu", threads=1))
    session = PLACEMENTS["ov-cpu"].open(None, built.onnx_path, "fp32", "all", 1)
    try:
        full = session.predict(workload.data.example(32))  # compiles the model at batch 32
        part = session.predict(workload.data.example(7))  # 7 rows run on that batch-32 model
        assert part.shape == (7, workload.data.num_classes)
        np.testing.assert_allclose(part, full[:7], rtol=1e-5, atol=1e-5)
    finally:
        session.close()
    fp32 = measure(build(workload, Candidate(placement="ov-cpu", threads=1)), workload.data, QUICK)
    batched = measure(build(workload, Candidate(placement="ov-cpu", threads=1, batch_size=32)), workload.data, QUICK)
    assert batched.accuracy == pytest.approx(fp32.accuracy, abs=1e-9)
    assert batched.batch_size == 32 and batched.executed_precision == "fp32"


# tuner quantizes with reduce_range on CPUs without VNNI (see tuner/passes/quantize.py), so int8 holds
# within 2 points on every CPU.
INT8_TOLERANCE = 0.02


def test_int8_reuses_the_ort_qdq_file_and_runs_int8(workload):
    ort_built = build(workload, Candidate(precision="int8", placement="ort-cpu", threads=1))
    ov_built = build(workload, Candidate(precision="int8", placement="ov-cpu", threads=1))
    assert ov_built.onnx_path == ort_built.onnx_path  # one calibrated build, two runtimes
    int8 = measure(ov_built, workload.data, QUICK)
    fp32 = measure(build(workload, Candidate(placement="ov-cpu", threads=1)), workload.data, QUICK)
    assert int8.executed_precision == "int8"
    assert fp32.executed_precision == "fp32"
    assert int8.accuracy >= fp32.accuracy - INT8_TOLERANCE


@pytest.mark.skipif(hardware.native_bf16(), reason="this CPU has BF16: bf16 runs (see the next test)")
def test_bf16_is_refused_without_cpu_bf16(workload):
    reason = PLACEMENTS["ov-cpu"].refuse("bf16")
    assert reason and "AVX512-BF16" in reason
    misses = workload.cache.misses
    with pytest.raises(UnsupportedCombination, match="refused"):
        build(workload, Candidate(precision="bf16", placement="ov-cpu"))
    assert workload.cache.misses == misses


@pytest.mark.skipif(not hardware.native_bf16(), reason="needs a CPU with AVX512-BF16 or AMX")
def test_bf16_runs_and_reports_bf16_on_a_bf16_cpu(workload):
    check_supported(Candidate(precision="bf16", placement="ov-cpu"))
    m = measure(build(workload, Candidate(precision="bf16", placement="ov-cpu", threads=1)), workload.data, QUICK)
    assert m.executed_precision == "bf16"


def test_default_space_includes_ov_cpu():
    space = load_space("default")
    assert "ov-cpu" in space.placements
    precision = next(p for p in space.params if p.name == "precision")
    assert {"fp32", "int8"} <= set(precision.choices["ov-cpu"])
    assert ("bf16" in precision.choices["ov-cpu"]) == hardware.native_bf16()


@pytest.mark.parametrize("quantized_ops, expected", [(["MaxPool"], "fp32"), (["Gemm"], "mixed")])
def test_qdq_that_does_not_run_int8_is_reported_as_run(workload, tmp_path, quantized_ops, expected):
    """QDQ pairs only around a pooling op leave every conv/FC in float: read back as fp32, not int8."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from tuner.passes.qdq import CalibrationReader

    fp32 = build(workload, Candidate(placement="ov-cpu", threads=1)).onnx_path
    partial = tmp_path / "partial.onnx"
    quantize_static(
        str(fp32),
        str(partial),
        CalibrationReader(workload.data),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=quantized_ops,
    )
    session = PLACEMENTS["ov-cpu"].open(None, partial, "int8", "all", 1)
    try:
        session.predict(workload.data.example(2))
        assert session.executed_precision == expected
    finally:
        session.close()


def test_openvino_starts_no_telemetry_process():
    """`import openvino` posts telemetry from a spawned Python process that would compete with the timing."""
    code = (
        "import multiprocessing, sys, time\n"
        "from tuner.runtimes.openvino import _core\n"
        "_core()\n"
        "time.sleep(1.0)  # the event is sent from a background thread shortly after the import\n"
        "print(len(multiprocessing.active_children()), sys.modules.get('openvino_telemetry'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}  # it skips CI
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "None"]


def test_threads_are_pinned_only_where_they_cover_every_cpu():
    """Pinned where there is no quieter subset to move to (unpinned, the OS at times put two streams on one CPU for a
    whole process); unpinned where the timing may move fewer threads onto the quietest CPUs."""
    from tuner.runtimes.openvino import compile_config

    pins = {
        (threads, streams): compile_config("int8", threads, streams, cpus=4)["ENABLE_CPU_PINNING"]
        for threads in (1, 2, 4)
        for streams in (1, 2, 4)
        if threads * streams <= 4
    }
    assert pins == {(1, 1): False, (1, 2): False, (2, 1): False, (1, 4): True, (2, 2): True, (4, 1): True}
    assert compile_config("fp32", 2, cpus=2) == {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 2,
        "ENABLE_CPU_PINNING": True,
    }


def test_a_onednn_isa_cap_without_bf16_refuses_bf16_and_keeps_float_layers_fp32(monkeypatch):
    """OpenVINO honours ONEDNN_MAX_CPU_ISA and emulates bf16 under a cap that lacks it (6.7x slower, measured)."""
    from tuner.runtimes.openvino import compile_config

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_vnni")
    for placement in ("ov-cpu", "torch-cpu"):  # torch's CPU convolutions are oneDNN's too (10x slower, measured)
        assert "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" in PLACEMENTS[placement].refuse("bf16")
    assert compile_config("int8", 1, float_layers=True)["INFERENCE_PRECISION_HINT"] == "f32"
    assert hardware.fingerprint()["onednn_isa_cap"] == "AVX512_CORE_VNNI"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert "onednn_isa_cap" not in hardware.fingerprint()
    assert (PLACEMENTS["torch-cpu"].refuse("bf16") is None) == hardware.has_cpu_bf16()
    mixed = compile_config("int8", 1, float_layers=True)["INFERENCE_PRECISION_HINT"]
    assert mixed == ("bf16" if hardware.native_bf16() else "f32")
    assert compile_config("int8", 1)["INFERENCE_PRECISION_HINT"] == "f32"  # uniform int8's remainder: fp32


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to choose between")
def test_a_one_thread_model_stays_where_the_timing_put_it(workload):
    """OpenVINO's own thread pinning would move its threads back after a few calls (it is turned off)."""
    from tuner.measure import host

    built = build(workload, Candidate(placement="ov-cpu", threads=1))
    session = PLACEMENTS["ov-cpu"].open(None, built.onnx_path, "fp32", "all", 1)
    prepared = session.prepare(workload.data.example(1))
    cpu = host.ALLOWED[-1]
    try:
        session.run(prepared)
        host.pin_process({cpu})
        for _ in range(20):
            session.run(prepared)
        placed = {tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir("/proc/self/task")}
        assert placed == {(cpu,)}, placed
    finally:
        host.pin_process(host.ALLOWED)
        session.close()


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_session_opens_the_ir_saved_from_the_onnx_file_and_runs_it_alike(workload, tmp_path, precision):
    """An export's IR (``save_ir``: weights uncompressed, the QDQ graph as is) opens like its ONNX file: same
    logits, same executed precision, the same compile config."""
    from tuner.runtimes.openvino import compile_config, save_ir

    onnx_path = build(workload, Candidate(precision=precision, placement="ov-cpu", threads=1)).onnx_path
    save_ir(onnx_path, tmp_path / "model.xml")
    assert (tmp_path / "model.bin").stat().st_size > 0
    x = workload.data.example(3)
    sessions = [PLACEMENTS["ov-cpu"].open(None, p, precision, "all", 1) for p in (onnx_path, tmp_path / "model.xml")]
    try:
        from_onnx, from_ir = (s.predict(x) for s in sessions)
        np.testing.assert_allclose(from_ir, from_onnx, atol=1e-4, rtol=1e-4)
        assert sessions[1].executed_precision == sessions[0].executed_precision == precision
        assert sessions[1].config == compile_config(precision, 1)
    finally:
        for s in sessions:
            s.close()
