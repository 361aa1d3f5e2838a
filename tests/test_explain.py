"""tuner.explain: per-layer profiles from each runtime's own profiler, matched to module names, and `tuner explain`."""

import json

import pytest

from tests.conftest import run_tuner
from tuner.candidate import Candidate
from tuner.explain.compare import compare, render
from tuner.explain.layers import EXECUTED, LayerProfile, NodeTime
from tuner.explain.match import COMPUTE, QUANTIZE, REORDER, kind_of, module_of, scope_path
from tuner.explain.profile import profile, refuse
from tuner.explain.trials import cached_profile
from tuner.passes.chain import build

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

# conv_net (tests/tiny_models.py) is a Sequential: its compute layers are the modules "0", "4" (convs) and "9" (fc).
LAYERS = {"0", "4", "9"}
SUM_TOLERANCE = 0.15  # per-layer times plus the time outside them make the call; the layers alone never exceed it


def test_scope_path_reads_the_exporter_node_names():
    assert scope_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert scope_path("/stem/stem.0/Conv/WithoutBiases") == "stem.0"  # OpenVINO's name for the fused conv
    assert scope_path("/blocks/blocks.0/expand/expand.0/Conv_token_4") == "blocks.0.expand.0"  # ORT after QDQ fusion
    assert scope_path("/0/Conv") == "0"
    assert scope_path("/Flatten") is None and scope_path("Transpose_token_64") is None
    assert module_of("/layer1/layer1.0/conv1/Conv", {"layer1", "layer1.0"}) == "layer1.0"  # longest known enclosing
    assert module_of("/layer1/layer1.0/relu_1/Relu", {"layer1.0", "layer1.0.relu"}) == "layer1.0.relu"  # called twice
    assert (
        kind_of("QLinearConv") == COMPUTE and kind_of("Reorder") == REORDER and kind_of("DequantizeLinear") == QUANTIZE
    )
    assert kind_of("Subgraph", "input_QuantizeLinear") == QUANTIZE


def _check(p: LayerProfile, precision: str) -> dict:
    assert p.total_ms > 0 and p.latency_ms > 0
    # The layers' sum and the rest make the profiled call; the rest is reported, never negative.
    assert p.nodes_ms <= p.total_ms * (1 + SUM_TOLERANCE)
    assert p.outside_ms == pytest.approx(max(0.0, p.total_ms - p.nodes_ms))
    layers = {la.module: la for la in p.layers()}
    assert set(layers) >= LAYERS, sorted(layers)
    for name in LAYERS:  # every compute layer named by its module, its executed precision read back
        assert layers[name].precision == precision, (name, layers[name])
        # a layer of the 16 px test model can take under the microsecond OpenVINO's counters resolve: 0 is a reading
        assert layers[name].ms >= 0 and layers[name].kernels
    assert sum(layers[name].ms for name in LAYERS) > 0
    assert all(n.module is not None for n in p.nodes if n.kind == COMPUTE and n.status == EXECUTED)
    return layers


def test_openvino_int8_profile(workload):
    p = profile(build(workload, Candidate(placement="ov-cpu", precision="int8", threads=1)), workload.data, 20)
    layers = _check(p, "int8")
    assert any("I8" in k for k in layers["0"].kernels)  # the kernel OpenVINO chose, e.g. brgconv_avx512_I8
    assert layers["0"].channels == 32 and layers["9"].channels == 10  # read from the ONNX weights


def test_ort_int8_profile(workload):
    p = profile(build(workload, Candidate(placement="ort-cpu", precision="int8", threads=1)), workload.data, 20)
    layers = _check(p, "int8")
    assert any("QLinearConv" in k for k in layers["4"].kernels)
    assert p.kind_ms(QUANTIZE) > 0  # the input's QuantizeLinear and the logits' DequantizeLinear


def test_torch_fp32_profile(workload):
    c = Candidate(placement="torch-cpu", threads=1, prune_ratio=0.5)
    p = profile(build(workload, c), workload.data, 20)
    layers = _check(p, "fp32")
    assert "conv" in layers["0"].kernels[0]  # the aten op that did the work, from torch.profiler
    assert layers["4"].channels == 32  # pruned from 64
    # Hooks time every module, containers' own Python included: the modules make nearly the whole call.
    assert p.nodes_ms >= (1 - SUM_TOLERANCE) * p.total_ms


def test_profile_is_cached_beside_the_build(workload):
    built = build(workload, Candidate(placement="ort-cpu", precision="int8", threads=1))
    first = cached_profile(workload, built, repeats=5)
    hits = workload.cache.hits
    again = cached_profile(workload, built, repeats=5)
    assert workload.cache.hits == hits + 1 and again == first


def test_gpu_placements_are_refused_in_words():
    assert refuse("ov-cpu") is None
    assert "not profiled" in refuse("ort-tensorrt") and "not profiled" in refuse("torch-cuda")


def _node(module, ms, precision, kind=COMPUTE, node=None):
    return NodeTime(node or f"/{module}/Conv", "Conv", "k", precision, ms, EXECUTED, module, kind)


def test_findings_name_the_layers_that_make_an_int8_build_slower():
    base = LayerProfile(
        "ort-cpu",
        "fp32",
        1,
        1,
        10,
        (_node("conv1", 1.0, "fp32"), _node("fc", 0.5, "fp32")),
        1.6,
        1.6,
        "test",
        {"conv1": 64, "fc": 10},
    )
    slow = LayerProfile(
        "ort-cpu",
        "int8",
        1,
        1,
        10,
        (_node("conv1", 1.4, "int8"), _node("fc", 0.5, "fp32"), _node(None, 0.4, "fp32", QUANTIZE, "x_QuantizeLinear")),
        2.4,
        2.4,
        "test",
        {"conv1": 64, "fc": 10},
    )
    c = compare(slow, base, 3, 0, "ort-cpu int8", "ort-cpu fp32")
    text = " ".join(c.findings)
    assert "slower than the baseline" in text and "conv1 (0.400 ms)" in text
    assert "conversions add 0.400 ms per sample, the costliest: x_QuantizeLinear (Conv, 0.400 ms)" in text
    assert "conv1 runs int8 but costs 58% of the time" in text and "64 channels were not pruned" in text
    assert "Reorder/Convert/Quantize nodes cost 17%" in text and "fc" in text  # the float layer pays for conversions
    assert "fp32 -> int8" in {r.module: r.changed for r in c.rows}["conv1"]
    assert "conv1" in render(c)
    assert json.loads(json.dumps(c.to_dict()))["rows"][0]["module"] == "conv1"


def test_explain_prints_the_pick_against_the_baseline(small_study):
    args = ("explain", "--study", small_study["name"], "--studies-dir", small_study["studies_dir"], "--repeats", "5")
    r = run_tuner(*args)
    assert r.returncode == 0, r.stderr
    assert "against trial #0" in r.stdout and "findings:" in r.stdout and "top 5 layers by time" in r.stdout
    r = run_tuner(*args, "--json", "--trial", "0")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["trial"] == 0 and done["against"] is None and {row["module"] for row in done["rows"]} >= LAYERS


def test_explain_unknown_trial_is_one_line_exit_2(small_study):
    r = run_tuner(
        "explain", "--study", small_study["name"], "--studies-dir", small_study["studies_dir"], "--trial", "999"
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "has no trial #999" in r.stderr


def test_export_lines_name_the_three_costliest_layers(tmp_path):
    from tuner.explain.trials import write_profile

    p = LayerProfile(
        "ov-cpu",
        "int8",
        1,
        1,
        10,
        (_node("a", 0.1, "int8"), _node("b", 0.5, "int8"), _node("c", 0.3, "fp32"), _node("d", 0.2, "int8")),
        1.2,
        1.1,
        "test",
    )
    lines = write_profile(tmp_path, p)
    assert [line.split("`")[1] for line in lines[1:]] == ["b", "c", "d"] and "runs fp32" in lines[2]
    assert LayerProfile.from_dict(json.loads((tmp_path / "profile.json").read_text())) == p


def test_ort_fp32_fused_convs_keep_their_module(workload):
    """ORT names a Conv fused with its Relu (NCHWc) after the Relu's output: the conv's module is found again."""
    p = profile(build(workload, Candidate(placement="ort-cpu", precision="fp32", threads=1)), workload.data, 10)
    layers = _check(p, "fp32")
    assert not any(la.compute for name, la in layers.items() if name not in LAYERS), layers.keys()
