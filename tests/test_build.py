"""Each build step on small models: real torch-pruning, real ORT quantization, no mocks."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tests.tiny_models import mobile_net
from tuner.candidate import Candidate
from tuner.errors import UnsupportedCombination
from tuner.hardware import has_cpu_vnni
from tuner.passes.chain import build
from tuner.passes.fuse import fold_bn
from tuner.passes.onnx_export import export_onnx
from tuner.passes.prune import count, output_layer, prune
from tuner.passes.qdq import quantize_int8
from tuner.passes.recover import budget_steps, recover
from tuner.runtimes.ort import executed_precision
from tuner.train import torch_accuracy


def _example(size=16):
    torch.manual_seed(0)
    return torch.randn(1, 3, size, size)


def test_prune_mobile_net_keeps_classes_and_shrinks():
    """Depthwise convs, squeeze-excite, hardswish/SiLU and residual adds prune consistently."""
    model, x = mobile_net(num_classes=7).eval(), _example()
    macs, params = count(model, x)
    prune(model, 0.5, x)
    macs2, params2 = count(model, x)
    assert model(x).shape == (1, 7)
    assert macs2 < 0.6 * macs and params2 < 0.6 * params
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels > 8]
    assert all(m.out_channels % 8 == 0 for m in convs)  # rounded to hardware-friendly multiples


def test_output_layer_is_the_classifier():
    model = mobile_net(num_classes=5)
    assert output_layer(model, _example()) is model.head[2]


def test_recover_restores_accuracy(workload):
    reference = workload.reference_model()
    base_acc = torch_accuracy(reference, workload.data)
    student = workload.reference_model()
    prune(student, 0.5, torch.from_numpy(workload.data.example(1)))
    pruned_acc = torch_accuracy(student, workload.data)
    budget = budget_steps(0.75, 30, "short", len(workload.data.train))
    record = recover(student, reference, workload.data, removed=0.75, budget=budget, fidelity="short")
    # 30 steps per half removed (45), capped at MAX_EPOCHS passes over the train split (43 on digits' 898 images)
    assert record.planned == budget == min(45, budget_steps(1.0, 10**6, "short", len(workload.data.train)))
    assert record.loss_end < record.loss_start
    assert 0 < record.steps <= budget and record.seconds > 0 and record.proxy  # it learned, judged by its proxy
    recovered = torch_accuracy(student, workload.data)
    assert recovered > pruned_acc or recovered >= base_acc - 0.05
    assert recovered >= base_acc - 0.1


def test_fold_bn_removes_batchnorm_and_keeps_outputs():
    model, x = mobile_net().eval(), _example()
    with torch.no_grad():
        for m in model.modules():  # non-trivial BN statistics
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        folded = fold_bn(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert torch.allclose(model(x), folded(x), atol=1e-4, rtol=1e-3)


def test_export_runs_in_ort_with_any_batch(tmp_path):
    model, x = mobile_net().eval(), _example()
    path = export_onnx(model, x, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.randn(5, 3, 16, 16)
    out = session.run(None, {"input": batch.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, model(batch).numpy(), atol=1e-4, rtol=1e-3)


def test_int8_quantization_is_real_and_accurate(workload, tmp_path):
    model = workload.reference_model()
    fp32 = export_onnx(model, torch.from_numpy(workload.data.example(1)), tmp_path / "fp32.onnx")
    int8 = quantize_int8(fp32, workload.data, tmp_path / "int8.onnx", reduce_range=not has_cpu_vnni())
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weights = [i for i in onnx.load(str(int8)).graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert weights, "per-channel int8 weights are stored"
    # ORT fuses QDQ into integer kernels once graph optimization is on: executed precision is read back.
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    session = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
    assert executed_precision(tmp_path / "opt.onnx") == "int8"
    correct = sum(
        int((session.run(None, {"input": x})[0].argmax(1) == y).sum())
        for x, y in workload.data.batches(workload.data.val, 64)
    )
    assert correct / len(workload.data.val) >= torch_accuracy(model, workload.data) - 0.02


def test_mobile_net_quantizes(tmp_path, workload):
    model = mobile_net(num_classes=10).eval()
    fp32 = export_onnx(model, torch.from_numpy(workload.data.example(1)), tmp_path / "fp32.onnx")
    int8 = quantize_int8(fp32, workload.data, tmp_path / "int8.onnx", reduce_range=not has_cpu_vnni())
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": workload.data.example(4)})[0].shape == (4, 10)


def test_build_chains_steps_and_reuses_the_cache(workload):
    c = Candidate(prune_ratio=0.5, precision="int8", fold_bn=True, placement="ort-cpu")
    first = build(workload, c)
    hits = workload.cache.hits
    again = build(workload, Candidate(prune_ratio=0.5, precision="fp32", fold_bn=True, placement="ort-cpu"))
    assert workload.cache.hits > hits  # the pruned + recovered weights and the ONNX export are reused
    assert first.onnx_path != again.onnx_path and first.macs == again.macs
    plain = build(workload, Candidate())
    assert first.macs < plain.macs and first.params < plain.params and first.artifact_bytes < plain.artifact_bytes


@pytest.mark.parametrize(
    "candidate",
    [
        Candidate(precision="bf16", placement="ort-cpu"),
        Candidate(precision="fp16", placement="ort-cpu"),
        Candidate(precision="int8", placement="torch-cpu"),
        pytest.param(
            Candidate(placement="torch-cuda"),
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA"),
        ),
    ],
)
def test_unsupported_combination_is_refused_before_work(workload, candidate):
    misses = workload.cache.misses
    with pytest.raises(UnsupportedCombination, match="refused"):
        build(workload, candidate)
    assert workload.cache.misses == misses
