"""Per-layer mixed precision and calibration choices: a deterministic, cached sensitivity ranking; k=0 is uniform
int8; the k most sensitive layers really run in float (read back per layer from ORT and OpenVINO); every
calibration method builds and measures."""

from __future__ import annotations

import pytest

from tests.conftest import TINY
from tuner import hardware
from tuner.candidate import Candidate
from tuner.measure import measure
from tuner.measure.latency import LatencyPolicy
from tuner.passes.chain import build
from tuner.passes.sensitivity import ranking
from tuner.passes.step import StepContext

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

QUICK = LatencyPolicy(min_seconds=0.2, max_seconds=0.4, warmup_seconds=0.05, quiet_host=False)


@pytest.fixture(scope="module")
def mobile(studies_dir):
    """The tests' depthwise / squeeze-excite / hardswish model: 11 convs and a Gemm to rank."""
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    spec = WorkloadSpec(
        model=f"{TINY}:mobile_net",
        data="digits",
        resolution=16,
        train_steps=60,
        recover_steps=10,
        cache_dir=str(studies_dir / "cache"),
    )
    return load_workload(spec)


def _fp32_artifact(workload):
    import torch

    from tuner.passes.onnx_export import onnx_fp32_step

    ctx = StepContext(
        workload, Candidate(placement="ort-cpu", precision="int8"), torch.from_numpy(workload.data.example(1)), {}
    )
    return ctx, onnx_fp32_step(ctx, workload.reference_model(), workload.key)


def test_sensitivity_ranking_is_deterministic_and_cached(mobile):
    ctx, fp32 = _fp32_artifact(mobile)
    first = ranking(ctx, fp32, reduce_range=False)
    assert len(first) == 12 and {s.op for s in first} == {"Conv", "Gemm"}
    assert [s.error for s in first] == sorted((s.error for s in first), reverse=True)
    assert all(s.error >= 0 and 0 <= s.agreement <= 1 for s in first) and first[0].error > first[-1].error
    hits = mobile.cache.hits
    assert ranking(ctx, fp32, reduce_range=False) == first and mobile.cache.hits == hits + 1  # from the cache
    from tuner.passes.sensitivity import measure_layers

    again = measure_layers(fp32.path, mobile.data, reduce_range=False)  # computed afresh
    assert [s.node for s in again] == [s.node for s in first]
    assert [s.error for s in again] == pytest.approx([s.error for s in first])


def test_k0_is_uniform_int8_and_k_layers_run_in_float(mobile):
    uniform = build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1))
    k0 = build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1, float_layers=0))
    assert k0.onnx_path == uniform.onnx_path and not k0.float_layers and "sensitivity" not in k0.seconds
    m = measure(uniform, mobile.data, QUICK)
    assert m.executed_precision == "int8" and m.layer_precisions == "int8 12"

    ctx, fp32 = _fp32_artifact(mobile)
    top = [s.node for s in ranking(ctx, fp32, reduce_range=False)[:3]]
    # ORT runs the float layers in fp32; OpenVINO in bf16 where this CPU has it (uniform int8's remainder: fp32)
    floats = {"ort-cpu": "fp32", "ov-cpu": "bf16" if hardware.native_bf16() else "fp32"}
    for placement, float_precision in floats.items():
        mixed = build(mobile, Candidate(placement=placement, precision="int8", threads=1, float_layers=3))
        assert list(mixed.float_layers) == top and mixed.onnx_path != uniform.onnx_path
        m = measure(mixed, mobile.data, QUICK)
        assert m.executed_precision == "mixed", placement
        assert m.layer_precisions == f"int8 9 / {float_precision} 3", (placement, m.layer_precisions)
        assert m.to_dict()["float_layers"] == top
    ov_uniform = measure(build(mobile, Candidate(placement="ov-cpu", precision="int8", threads=1)), mobile.data, QUICK)
    assert ov_uniform.layer_precisions == "int8 12"


def test_an_export_records_the_compile_config_its_session_ran(mobile, tmp_path):
    """The IR an export saves from a mixed build compiles as the session compiled the ONNX file: bf16 for its float
    layers where this CPU has it; uniform int8's IR keeps the f32 hint."""
    from tuner.runtimes.openvino import OpenVinoSession, model_config, read_model, save_ir

    for k, hint in ((0, "f32"), (3, "bf16" if hardware.native_bf16() else "f32")):
        built = build(mobile, Candidate(placement="ov-cpu", precision="int8", threads=1, float_layers=k))
        save_ir(built.onnx_path, tmp_path / f"k{k}.xml")
        recorded = model_config(read_model(tmp_path / f"k{k}.xml"), "int8", 1)
        session = OpenVinoSession(built.onnx_path, "int8", 1)
        assert recorded == session.config and recorded["INFERENCE_PRECISION_HINT"] == hint, k
        session.close()


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_every_calibration_method_builds_and_measures(mobile, method):
    c = Candidate(placement="ort-cpu", precision="int8", threads=1, calibration=method)
    built = build(mobile, c)
    m = measure(built, mobile.data, QUICK)
    assert m.executed_precision == "int8" and m.accuracy > 0.5 and m.per_sample_ms > 0
    if method != "minmax":  # a different calibration is a different build, never the minmax file reused
        assert built.onnx_path != build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1)).onnx_path


def _activation_quantizers(path):
    """Per QuantizeLinear: whether it touches a compute layer (quantizes a Conv / Gemm / MatMul's input or
    output) or only other ops (a SE block's Mul, a sigmoid, a residual Add alone)."""
    import onnx

    graph = onnx.load(str(path)).graph
    made_by = {o: n for n in graph.node for o in n.output}
    read_by: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            read_by.setdefault(name, []).append(node)
    touches = []
    for q in (n for n in graph.node if n.op_type == "QuantizeLinear"):  # weights are stored int8: activations only
        ops = {made_by[q.input[0]].op_type} if q.input[0] in made_by else set()
        ops |= {c.op_type for dq in read_by.get(q.output[0], []) for c in read_by.get(dq.output[0], [])}
        touches.append(bool(ops & {"Conv", "Gemm", "MatMul"}))
    return touches


def test_int8_ops_compute_quantizes_the_compute_layers_only(mobile):
    every = build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1))
    compute = build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1, int8_ops="compute"))
    assert compute.onnx_path != every.onnx_path  # its own build, never the all-ops file reused
    every_q, compute_q = _activation_quantizers(every.onnx_path), _activation_quantizers(compute.onnx_path)
    assert all(compute_q) and len(compute_q) < len(every_q)
    assert not all(every_q)  # all ops: some tensors are quantized for others than the compute layers
    for placement in ("ort-cpu", "ov-cpu"):
        m = measure(
            build(mobile, Candidate(placement=placement, precision="int8", threads=1, int8_ops="compute")),
            mobile.data,
            QUICK,
        )
        assert m.executed_precision == "int8" and m.layer_precisions == "int8 12", (placement, m.layer_precisions)
        assert m.accuracy > 0.5
    mixed = measure(
        build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1, int8_ops="compute", float_layers=2)),
        mobile.data,
        QUICK,
    )
    assert mixed.layer_precisions == "int8 10 / fp32 2"


def _activation_scales(path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return [float(values[q.input[1]]) for q in graph.node if q.op_type == "QuantizeLinear"]


def test_calibration_images_is_a_build_of_its_own_and_all_of_the_split_by_default(mobile):
    every = build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1))
    beyond = build(
        mobile,
        Candidate(placement="ort-cpu", precision="int8", threads=1, calibration_images=len(mobile.data.calib) + 1),
    )
    few = build(mobile, Candidate(placement="ort-cpu", precision="int8", threads=1, calibration_images=8))
    assert beyond.onnx_path == every.onnx_path  # more than the split is the whole split: one build
    assert few.onnx_path != every.onnx_path
    assert _activation_scales(few.onnx_path) != _activation_scales(every.onnx_path)  # ranges from 8 images
    m = measure(few, mobile.data, QUICK)
    assert m.executed_precision == "int8" and m.accuracy > 0.5


def test_calibration_float_layers_and_int8_ops_are_int8_only():
    from tuner.errors import ConfigError

    with pytest.raises(ConfigError, match="int8 only"):
        Candidate(precision="fp32", float_layers=2)
    with pytest.raises(ConfigError, match="int8 only"):
        Candidate(precision="bf16", int8_ops="compute")
    with pytest.raises(ConfigError, match="calibration must be one of"):
        Candidate(precision="int8", calibration="kl")
    with pytest.raises(ConfigError, match="int8_ops must be one of"):
        Candidate(precision="int8", int8_ops="matmul")
    with pytest.raises(ConfigError, match="int8 only, but got precision='fp32' with calibration_images=64"):
        Candidate(precision="fp32", calibration_images=64)
    with pytest.raises(ConfigError, match="calibration_images must be an integer >= 0"):
        Candidate(precision="int8", calibration_images=-1)
