"""Model zoo names end to end: ``tuner measure --model mobilenet_v3_small`` builds torchvision's model (installed
with the test extra, importable beside the CPU torch wheel through ``tuner.zoo``), loads ``--weights`` saved from
torchvision's own builder (no hub download), and measures it on digits at 32 px in torch and in ONNX Runtime."""

import json

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import run_tuner
from tuner.zoo import torchvision_models

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

NAME = "mobilenet_v3_small"


@pytest.fixture(scope="module")
def tvm():
    try:
        return torchvision_models()
    except ImportError as err:
        pytest.skip(f"torchvision is in the test extra (pip install -e '.[test]'): {err}")


def test_torchvision_imports_beside_the_cpu_torch_wheel(tvm):
    assert NAME in tvm.list_models() and "resnet18" in tvm.list_models()
    assert torchvision_models() is tvm  # imported once


@pytest.fixture(scope="module")
def weights(tvm, tmp_path_factory):
    """A state_dict from torchvision's builder with the data's 10 classes; its own accuracy on the validation split
    (computed here, outside tuner) is what the measurement must reproduce."""
    from tuner.data import load_dataset

    torch.manual_seed(0)
    model = tvm.get_model(NAME, weights=None, num_classes=10).eval()
    path = tmp_path_factory.mktemp("zoo") / f"{NAME}_digits.pt"
    torch.save(model.state_dict(), path)
    data = load_dataset("digits", 32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(data.normalize(data.val.images)))
    accuracy = float(np.mean(logits.argmax(1).numpy() == data.val.labels))
    params = sum(p.numel() for p in model.parameters())
    return {"path": path, "accuracy": accuracy, "params": params, "n_val": len(data.val)}


@pytest.mark.parametrize("placement", ["torch-cpu", "ort-cpu"])
def test_measure_a_torchvision_name_with_weights(weights, studies_dir, tmp_path, placement):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"placement": placement, "threads": 1, "batch_size": 16}))
    r = run_tuner(
        "measure",
        "--model",
        NAME,
        "--weights",
        str(weights["path"]),
        "--data",
        "digits",
        "--resolution",
        "32",
        "--config",
        str(config),
        "--studies-dir",
        str(studies_dir),
        "--json",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["config"]["placement"] == placement and m["executed_precision"] == "fp32"
    assert m["params"] == weights["params"]  # torchvision's architecture, as built by its builder
    # the saved weights were loaded: the accuracy is the state_dict's own, within one validation image
    assert abs(m["accuracy"] - weights["accuracy"]) <= 1.0 / weights["n_val"] + 1e-9
    assert m["latency_ms"] > 0 and m["macs"] > 0


def test_weights_for_another_class_count_are_refused(tvm, studies_dir, tmp_path):
    path = tmp_path / "five.pt"
    torch.save(tvm.get_model(NAME, weights=None, num_classes=5).state_dict(), path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"placement": "torch-cpu", "threads": 1}))
    r = run_tuner(
        "measure",
        "--model",
        NAME,
        "--weights",
        str(path),
        "--data",
        "digits",
        "--resolution",
        "32",
        "--config",
        str(config),
        "--studies-dir",
        str(studies_dir),
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]
    assert "5" in r.stderr and "10" in r.stderr
