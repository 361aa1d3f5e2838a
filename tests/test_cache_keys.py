"""No silent wrong results: every input that changes what a build produces is in its cache key, so changing it
rebuilds (the baseline, the pruned and recovered weights, the ONNX file, the int8 file), and the same inputs
reuse every cached entry.

The tiny CNN on digits at 16 px, a few training and recovery steps, one pruned int8 candidate (which passes
through every cached stage), built once per changed input into one shared temporary cache."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, make_image_folder
from tuner.cache import Cache
from tuner.candidate import Candidate

CANDIDATE = Candidate(prune_ratio=0.5, precision="int8", placement="ort-cpu", threads=1)
STAGES = ("prune", "onnx", "int8")  # the cache entries `build` makes for CANDIDATE, in order


@dataclass(frozen=True)
class Entry:
    key: str
    path: Path
    hit: bool


@dataclass(frozen=True)
class Built:
    workload_key: str
    baseline: Entry | None
    stages: dict[str, Entry]

    def all_entries(self) -> list[Entry]:
        return ([self.baseline] if self.baseline else []) + list(self.stages.values())


@pytest.fixture(scope="module")
def recorder() -> Iterator[list[Entry]]:
    """Every Cache.entry call, in order: (key, directory, whether it was already there)."""
    calls: list[Entry] = []
    original = Cache.entry

    def entry(self: Cache, key: str, build):
        hit = self.root is not None and (self.root / key).is_dir()
        path = original(self, key, build)
        calls.append(Entry(key, path, hit))
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Cache, "entry", entry)
        yield calls


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's model file (a copy of the tests' tiny models) that a case edits in place."""
    path = tmp_path_factory.mktemp("user") / "my_models.py"
    shutil.copy(ROOT / "tests" / "tiny_models.py", path)
    return path


@pytest.fixture(scope="module")
def build_with(recorder: list[Entry], model_file: Path, tmp_path_factory: pytest.TempPathFactory):
    from tuner.passes.chain import build
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    base = WorkloadSpec(
        model=f"{model_file}:conv_net",
        data="digits",
        resolution=16,
        train_steps=3,
        recover_steps=4,
        seed=0,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
    )

    def run(**changes) -> Built:
        spec = replace(base, **changes)
        recorder.clear()
        workload = load_workload(spec)
        baseline = recorder[0] if recorder and spec.weights is None else None
        recorder.clear()
        build(workload, CANDIDATE)
        stages = dict(zip(STAGES, recorder[:3]))
        assert len(recorder) == 3, recorder
        return Built(workload.key, baseline, stages)

    return run


@pytest.fixture(scope="module")
def original(build_with) -> Built:
    return build_with()


CHANGES = {  # input -> the WorkloadSpec change (the CLI flag it stands for)
    "mean": {"mean": (0.5, 0.5, 0.5)},  # --mean
    "std": {"std": (0.3, 0.3, 0.3)},  # --std
    "resolution": {"resolution": 20},  # --resolution
    "seed": {"seed": 1},  # --seed
    "train_steps": {"train_steps": 4},  # --train-steps
    "recover_steps": {"recover_steps": 6},  # --recover-steps
}


def test_the_same_inputs_reuse_every_entry(build_with, original):
    assert not any(e.hit for e in original.all_entries())  # the first build made them all
    again = build_with()
    assert again.workload_key == original.workload_key
    assert all(e.hit for e in again.all_entries())
    assert [e.path for e in again.all_entries()] == [e.path for e in original.all_entries()]


@pytest.mark.parametrize("name", list(CHANGES))
def test_changing_an_input_rebuilds(build_with, original, name):
    changed = build_with(**CHANGES[name])
    _assert_rebuilt(original, changed, baseline_too=name != "recover_steps")


def test_editing_the_model_file_rebuilds_and_restoring_it_reuses(build_with, original, model_file):
    text = model_file.read_text()
    try:
        model_file.write_text(text + "\n# the same builder, one comment more: still another source\n")
        changed = build_with()
    finally:
        model_file.write_text(text)
    _assert_rebuilt(original, changed, baseline_too=True)
    restored = build_with()
    assert restored.workload_key == original.workload_key and all(e.hit for e in restored.all_entries())


def _assert_rebuilt(original: Built, changed: Built, baseline_too: bool) -> None:
    if baseline_too:  # the reference weights themselves depend on it
        assert changed.workload_key != original.workload_key
        assert changed.baseline is not None and original.baseline is not None
        assert not changed.baseline.hit and changed.baseline.path != original.baseline.path
    else:  # the reference is the same, every build step after it is not
        assert changed.workload_key == original.workload_key
        assert changed.baseline is not None and changed.baseline.hit
    for stage in STAGES:
        new, old = changed.stages[stage], original.stages[stage]
        assert not new.hit and new.path != old.path, stage


def test_other_weights_change_the_workload_key(build_with, original, tmp_path):
    """With --weights the key holds the tensors' hash: one changed value is another workload."""
    from tuner.cache import tensor_hash

    state = torch.load(original.baseline.path / "weights.pt", weights_only=True)
    other = {k: v.clone() for k, v in state.items()}
    other["0.weight"][0, 0, 0, 0] += 1e-3
    assert tensor_hash(state) != tensor_hash(other)
    torch.save(state, tmp_path / "a.pt")
    torch.save(other, tmp_path / "b.pt")
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    keys = [
        load_workload(
            WorkloadSpec(model=f"{ROOT}/tests/tiny_models.py:conv_net", resolution=16, weights=str(p), cache_dir=None)
        ).key
        for p in (tmp_path / "a.pt", tmp_path / "b.pt")
    ]
    assert keys[0] != keys[1]


def test_image_folder_fingerprint_holds_normalization_seed_and_resolution(tmp_path):
    """The decoded pixels are cached once per (files' content, resolution); the data set's fingerprint, which keys every
    model trained or calibrated on it, also changes with the normalization and the seed."""
    from tuner.data import load_dataset

    root = make_image_folder(tmp_path / "images", classes=2, per_class=4, size=12)
    cache = tmp_path / "cache"

    def fp(**kw) -> str:
        args = {"resolution": 12, "mean": None, "std": None, "seed": 0, **kw}
        return load_dataset(str(root), args["resolution"], args["mean"], args["std"], args["seed"], cache).fingerprint

    base = fp()
    others = [fp(mean=(0.5, 0.5, 0.5)), fp(std=(0.5, 0.5, 0.5)), fp(seed=1), fp(resolution=16)]
    assert len({base, *others}) == 5
    assert fp() == base
    decoded = [p for p in (cache / "data").iterdir() if (p / "decoded.json").is_file()]
    assert len(decoded) == 2  # one decode per resolution, whatever the normalization


def test_digits_fingerprint_holds_normalization():
    from tuner.data import load_dataset

    a = load_dataset("digits", 16)
    assert load_dataset("digits", 16).fingerprint == a.fingerprint
    assert load_dataset("digits", 16, mean=(0.5, 0.5, 0.5)).fingerprint != a.fingerprint
    assert load_dataset("digits", 16, std=a.std).fingerprint == a.fingerprint  # the same figures: the same data
    assert load_dataset("digits", 16, std=(0.3, 0.3, 0.3)).fingerprint != a.fingerprint


def test_code_id_follows_the_code_not_its_comments(tmp_path, monkeypatch):
    """An edited comment or docstring keeps every cached build; an edited line of code rebuilds them."""
    import importlib

    from tuner.cache import code_id

    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "recipe_under_test.py"

    def key(text: str) -> str:
        module.write_text(text)
        importlib.invalidate_caches()
        return code_id("recipe_under_test")

    base = key('"""Train."""\n\ndef lr():\n    return 1e-3  # gentle\n')
    assert (
        key('"""Train a model, gently."""\n\ndef lr():\n    """The rate."""\n    return 1e-3  # said otherwise\n')
        == base
    )
    assert key('"""Train."""\n\ndef lr():\n    return 2e-3  # gentle\n') != base
