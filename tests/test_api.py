"""The Python API's inputs: a model and data given in memory reach every process of a study as files saved once
into the cache, keyed by content (tuner.api.inputs), or are refused in one line; the metric of the user's is
scored from logits in the study's own process (tuner.metric); ``import tuner`` exposes ``tune`` lazily."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import ROOT
from tests.tiny_models import BranchyNet, conv_net
from tuner.api.inputs import data_reference, model_reference
from tuner.cache import Cache
from tuner.errors import ConfigError, DataError, ModelError, TunerError

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def _python(code: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_a_module_of_main_is_traced_saved_and_rebuilt_by_another_process(tmp_path):
    """A class defined in __main__ (a notebook, a script) cannot be unpickled elsewhere; its fx GraphModule can."""
    saved = _python(
        f"""
        import torch
        from torch import nn
        from tuner.api.inputs import model_reference
        from tuner.cache import Cache

        class Mine(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 10)
            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

        torch.manual_seed(0)
        model = Mine().train()
        ref, name = model_reference(model, 16, Cache(__import__("pathlib").Path({str(tmp_path)!r})))
        assert model.training, "the user's module is left as it was"
        x = torch.ones(2, 3, 16, 16)
        print(ref, name, model.eval()(x).sum().item())
    """,
        tmp_path,
    )
    assert saved.returncode == 0, saved.stderr
    ref, name, value = saved.stdout.split()
    assert name == "Mine" and ref.endswith("module.pt")
    rebuilt = _python(
        f"""
        import torch
        from tuner import models
        model = models.create_model({ref!r}, 10)
        print(type(model).__name__, model(torch.ones(2, 3, 16, 16)).sum().item())
    """,
        tmp_path,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "GraphModule" in rebuilt.stdout and float(rebuilt.stdout.split()[1]) == pytest.approx(float(value))


def test_an_untraceable_module_of_main_is_refused_in_one_line(tmp_path):
    r = _python(
        f"""
        import torch
        from torch import nn
        from tuner.api.inputs import model_reference
        from tuner.cache import Cache
        from tuner.errors import ModelError

        class Branchy(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 10)
            def forward(self, x):
                if x.sum() > 0:
                    x = -x
                return self.fc(x.mean((2, 3)))
        try:
            model_reference(Branchy(), 16, Cache(__import__("pathlib").Path({str(tmp_path)!r})))
        except ModelError as err:
            print(err)
    """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert "\n" not in line and "torch.fx cannot trace it" in line and "__main__" in line, line
    assert not list(tmp_path.glob("*/module.pt"))  # nothing saved


def test_an_untraceable_importable_module_is_saved_whole_and_keyed_by_content(tmp_path):
    cache = Cache(tmp_path)
    torch.manual_seed(0)
    model = BranchyNet()
    ref, _ = model_reference(model, 16, cache)
    assert model_reference(model, 16, cache)[0] == ref  # the same content: the same file
    import json
    from pathlib import Path

    assert json.loads((Path(ref).parent / "module.json").read_text())["how"] == "pickle"
    with torch.no_grad():
        model.net[0].weight[0, 0, 0, 0] += 1e-3
    assert model_reference(model, 16, cache)[0] != ref  # one weight changed: another model
    from tuner import models

    rebuilt = models.create_model(ref, 10)
    assert type(rebuilt) is BranchyNet and models.carries_weights(ref)


def test_a_builder_passes_by_name_or_is_refused(tmp_path):
    assert model_reference(conv_net, 16, Cache(tmp_path)) == ("tests.tiny_models:conv_net", None)
    with pytest.raises(ModelError, match="cannot import"):
        model_reference(lambda num_classes: conv_net(num_classes), 16, Cache(tmp_path))
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        model_reference(42, 16, Cache(tmp_path))


def _digits_arrays(n: int = 60, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, 3, size, size), dtype=np.uint8), np.arange(n) % 4


def test_arrays_are_saved_once_by_content_and_read_back(tmp_path):
    from tuner.data import load_dataset

    cache = Cache(tmp_path)
    (tx, ty), (vx, vy) = _digits_arrays(60), _digits_arrays(20)
    ref, size = data_reference((tx, ty), (vx, vy), None, 0, cache)
    assert size == 16 and data_reference((tx.copy(), ty), (vx, vy), None, 0, cache)[0] == ref
    d = load_dataset(ref, holdout=0)
    assert d.classes == ("0", "1", "2", "3") and not d.preprocessed
    assert np.array_equal(d.train.images, tx) and np.array_equal(d.val.labels, vy)
    kept = load_dataset(ref)  # a share of each class's validation images kept from the search, as for any data
    assert len(kept.val) + len(kept.holdout) == len(vy) and len(kept.holdout) == 4
    expected_mean = tx.astype(np.float64).mean(axis=(0, 2, 3)) / 255
    assert d.mean == pytest.approx(tuple(expected_mean), rel=1e-5)  # the train split's, as for digits
    tx[0, 0, 0, 0] ^= 1
    assert data_reference((tx, ty), (vx, vy), None, 0, cache)[0] != ref  # one pixel: other data
    assert load_dataset(ref, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)).mean == (0.5, 0.5, 0.5)


def test_a_shuffling_loader_reads_the_same_images_every_time_and_floats_pass_as_given(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from tuner.data import load_dataset

    x = torch.randn(40, 3, 8, 8)
    y = torch.arange(40) % 3
    train = DataLoader(TensorDataset(x, y), batch_size=7, shuffle=True)
    first, _ = data_reference(train, TensorDataset(x[:9], y[:9]), ["a", "b", "c"], 0, Cache(tmp_path))
    again, _ = data_reference(train, TensorDataset(x[:9], y[:9]), ["a", "b", "c"], 0, Cache(tmp_path))
    assert first == again
    d = load_dataset(first, holdout=0)
    assert d.preprocessed and d.classes == ("a", "b", "c")
    assert np.array_equal(d.normalize(d.val.images), x[:9].numpy())  # the model's input, untouched
    assert np.array_equal(np.sort(d.train.labels), np.sort(y.numpy()))  # every image once, shuffled
    with pytest.raises(DataError, match="mean and std apply to uint8"):
        load_dataset(first, mean=(0.5, 0.5, 0.5))


@pytest.mark.parametrize(
    ("train", "val", "needle"),
    [
        ((np.zeros((4, 16, 16, 3), np.uint8), np.zeros(4, np.int64)), "same", "N x 3 x H x W"),
        ((np.zeros((4, 3, 16, 20), np.uint8), np.zeros(4, np.int64)), "same", "square"),
        ((np.zeros((4, 3, 8, 8), np.uint8), np.zeros(3, np.int64)), "same", "4 integers"),
        ((np.zeros((4, 3, 8, 8), np.uint8), -np.ones(4, np.int64)), "same", ">= 0"),
        ((np.full((4, 3, 8, 8), np.nan, np.float32), np.zeros(4, np.int64)), "same", "NaN"),
        (
            (np.zeros((4, 3, 8, 8), np.uint8), np.arange(4)),
            (np.zeros((2, 3, 8, 8), np.float32), np.arange(2)),
            "differ",
        ),
        ((np.zeros((4, 3, 8, 8), np.uint8), np.arange(4)), None, "pass val= too"),
        ("digits", (np.zeros((2, 3, 8, 8), np.uint8), np.arange(2)), "folder is split by itself"),
        ([1, 2, 3], "same", "must be 'digits'"),
    ],
)
def test_bad_data_in_memory_is_refused_in_one_line(tmp_path, train, val, needle):
    with pytest.raises(TunerError, match=needle) as err:
        data_reference(train, train if isinstance(val, str) else val, None, 0, Cache(tmp_path))
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing saved


def test_the_metric_rescores_logits_and_keeps_top1():
    from tuner.metric import make_metric, top1_of

    logits = np.asarray([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 1.0, 2.0]], np.float32)
    labels = np.asarray([2, 0, 1])

    def top2(lg, y):
        return (lg.topk(2, dim=1).indices == y[:, None]).any(1).float().mean()

    metrics = make_metric(top2).rescore({"accuracy": 1 / 3}, logits, labels)
    assert metrics["accuracy"] == pytest.approx(1.0) and top1_of(metrics) == pytest.approx(1 / 3)
    loss = make_metric(lambda lg, y: torch.nn.functional.cross_entropy(lg, y), higher_is_better=False)
    expected = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
    assert loss.score(logits, labels) == pytest.approx(-expected)  # negated: higher is better everywhere
    with pytest.raises(TunerError, match="finite"):
        make_metric(lambda lg, y: float("nan")).score(logits, labels)
    with pytest.raises(TunerError, match="ZeroDivisionError"):
        make_metric(lambda lg, y: 1 / 0).score(logits, labels)
    assert make_metric(top2).record() != make_metric(lambda lg, y: 0.5).record()  # another function, another study
