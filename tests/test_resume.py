"""Resume under another workload or another search space, as a user meets it: images added to --data, --weights
pointing to another file, another --resolution, choices added to the space or a choice turned into a range, a
guardrail added to the objectives, and two data folders with non-ASCII names. Each refusal runs the real CLI on its own copy of one small finished study and
must end with exit 2, exactly one line on stderr that starts "tuner: error:" and names what changed and the fix
(--study NEW), no traceback, nothing on stdout, and the study's database byte for byte as before (no trial added,
FAIL or other). What is merged (a range's new bounds) and what an old study without a recorded workload gets are
checked in process."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from tests.conftest import TINY, make_image_folder, run_tuner
from tuner.errors import ConfigError
from tuner.record import IDENTITY_ATTR
from tuner.study.resume import check_space, check_workload
from tuner.study.storage import default_study_name
from tuner.workload_spec import WorkloadSpec

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

PARALLEL = 3  # refusals at a time: most of one is interpreter and import start-up
SPACE = "placement: torch-cpu\nprecision: fp32\nthreads: 1\nbatch_size: {choices: [1, 8]}\n"


def _save_weights(path: Path, seed: int) -> None:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("tiny_models", TINY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(seed)
    torch.save(module.conv_net(num_classes=3).state_dict(), path)


def _run(
    d: Path, *extra: str, data: str = "images", weights: str = "w1.pt", space: str = "space.yaml", n_trials: int = 2
) -> list[str]:
    return [
        "run",
        "--model",
        f"{TINY}:conv_net",
        "--data",
        str(d / data),
        "--weights",
        str(d / weights),
        "--resolution",
        "16",
        "--recover-steps",
        "2",
        "--studies-dir",
        str(d / "studies"),
        "--space",
        str(d / space),
        "--n-trials",
        str(n_trials),
        "--remeasure-rounds",
        "0",
        *extra,
    ]


@dataclass(frozen=True)
class Base:
    root: Path
    name: str  # the default study name the first run printed


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    """A finished two-trial study (the fixed baseline, then one sampled from the space) on a tiny ImageFolder."""
    root = tmp_path_factory.mktemp("resume-base")
    make_image_folder(root / "images", per_class=4)
    _save_weights(root / "w1.pt", 0)
    _save_weights(root / "w2.pt", 1)
    (root / "space.yaml").write_text(SPACE)
    r = run_tuner(*_run(root))
    assert r.returncode == 0, r.stderr[-2000:]
    [db] = (root / "studies").glob("*.db")
    study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
    assert study.trials[-1].distributions, "a sampled trial, so that the space's distributions are stored"
    return Base(root, db.stem)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], list[str]]  # changes the case's copy of the base, returns the CLI arguments
    needle: str  # what the error line must name


def _space(text: str) -> Callable[[Path], list[str]]:
    def setup(d: Path) -> list[str]:
        (d / "space2.yaml").write_text(text)
        return _run(d, space="space2.yaml")

    return setup


def _add_image(d: Path) -> list[str]:
    shutil.copyfile(d / "images/train/class_0/0.png", d / "images/train/class_0/extra.png")
    return _run(d)


def _swap_content(d: Path) -> list[str]:
    shutil.copyfile(d / "w2.pt", d / "w1.pt")
    return _run(d)


CASES = [
    Case("images-added", _add_image, "the data in"),
    Case("weights-other-file", lambda d: _run(d, weights="w2.pt"), "--weights"),
    Case("weights-content-swapped", _swap_content, "--weights"),
    Case("other-resolution", lambda d: [*_run(d), "--resolution", "20"], "--resolution 20 (the study's: 16)"),
    Case("space-choices-added", _space(SPACE.replace("[1, 8]", "[1, 4, 8]")), "batch_size"),
    Case("space-choice-to-range", _space(SPACE.replace("{choices: [1, 8]}", "{low: 1, high: 8}")), "batch_size"),
    # a guardrail added on resume: the trials before it were never judged by it (nor scored on what it reads)
    Case("constraint-added", lambda d: [*_run(d), "--objectives", "guarded"], "flip_rate <= 0.03"),
]


def _db_hash(studies: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(studies.glob("*.db"))}


def _listing(root: Path) -> dict[str, tuple[bool, int]]:
    """Every file and folder but the cache (where newly decoded data may land): (is a folder, size)."""
    return {
        str(p.relative_to(root)): (p.is_dir(), 0 if p.is_dir() else p.stat().st_size)
        for p in sorted(root.rglob("*"))
        if "cache" not in p.relative_to(root).parts
    }


@dataclass
class Outcome:
    result: subprocess.CompletedProcess[str]
    before: tuple[dict[str, str], dict[str, tuple[bool, int]]]
    after: tuple[dict[str, str], dict[str, tuple[bool, int]]]
    root: Path


@pytest.fixture(scope="module")
def outcomes(base: Base, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Each case on its own copy of the base (resumed by name: the copy's paths differ), PARALLEL at a time."""
    prepared = {}
    for case in CASES:
        root = tmp_path_factory.mktemp(case.id)
        shutil.copytree(base.root, root, dirs_exist_ok=True)
        args = [*case.setup(root), "--study", base.name]
        prepared[case.id] = (args, root, (_db_hash(root / "studies"), _listing(root)))

    def go(item: tuple[str, tuple[list[str], Path, tuple]]) -> tuple[str, Outcome]:
        name, (args, root, before) = item
        result = run_tuner(*args, timeout=300)
        return name, Outcome(result, before, (_db_hash(root / "studies"), _listing(root)), root)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(pool.map(go, prepared.items()))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_resume_under_another_workload_or_space_is_refused(case: Case, outcomes: dict[str, Outcome], base: Base):
    o = outcomes[case.id]
    r = o.result
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    # the error's one line, after any line of progress ("decoding N images ..." of a new folder)
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("decoding ")]
    assert len(lines) == 1 and lines[0].startswith("tuner: error:"), r.stderr[-2000:]
    assert case.needle in lines[0] and "--study NEW" in lines[0], lines[0]
    assert not r.stdout.strip(), r.stdout[-1000:]
    assert o.after == o.before  # the database byte for byte, every file but the cache
    study = optuna.load_study(study_name=base.name, storage=f"sqlite:///{o.root / 'studies' / base.name}.db")
    assert len(study.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_same_command_resumes(base: Base, tmp_path: Path):
    """Nothing changed but the copy's place on disk: the study goes on (its identity holds no path)."""
    shutil.copytree(base.root, tmp_path, dirs_exist_ok=True)
    r = run_tuner(*_run(tmp_path), "--study", base.name)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resuming study {base.name}: 2 of 2" in r.stderr


def test_non_ascii_data_folders_get_studies_of_their_own(tmp_path: Path):
    """фото and 猫猫 used to share one default name (each non-ASCII run became "_"): the second resumed the first.
    Each now has its own, which the same command finds again."""
    make_image_folder(tmp_path / "фото", per_class=4)
    make_image_folder(tmp_path / "猫猫", per_class=5)
    _save_weights(tmp_path / "w1.pt", 0)
    (tmp_path / "space.yaml").write_text(SPACE)
    with ThreadPoolExecutor(2) as pool:  # were their names one, one run would resume (or wait on) the other's
        runs = list(pool.map(lambda data: run_tuner(*_run(tmp_path, data=data, n_trials=1)), ("фото", "猫猫")))
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
        assert "resuming" not in r.stderr
    dbs = sorted((tmp_path / "studies").glob("*.db"))
    assert len(dbs) == 2
    for db in dbs:
        study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]
    # The same command after images were added to one of them: its own study found again, and refused.
    before = _db_hash(tmp_path / "studies")
    shutil.copyfile(tmp_path / "фото/train/class_0/0.png", tmp_path / "фото/train/class_0/new.png")
    r = run_tuner(*_run(tmp_path, data="фото", n_trials=1))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    error = r.stderr.strip().splitlines()[-1]  # after the new folder's "decoding ..." line
    assert error.startswith("tuner: error: study ") and "the data in" in error and "фото" in error
    assert _db_hash(tmp_path / "studies") == before


# ---------------------------------------------------------------- in process


def test_default_names_are_distinct_readable_and_stable(tmp_path: Path):
    names = {
        d: default_study_name(WorkloadSpec(model="resnet18", data=str(tmp_path / d)), 32)
        for d in ("фото", "猫猫", "a/cats", "b/cats", "cats")
    }
    assert len(set(names.values())) == len(names)
    assert names["a/cats"].startswith("resnet18-cats-32px-") and names["фото"].startswith("resnet18-data-32px-")
    assert default_study_name(WorkloadSpec(model="resnet18", data=str(tmp_path / "фото")), 32) == names["фото"]
    assert default_study_name(WorkloadSpec(model="resnet18", data="digits"), 32).startswith("resnet18-digits-32px-")
    # A study made under the name before the hash (its SQLite file there) keeps that name.
    legacy = names["cats"].rpartition("-")[0]
    (tmp_path / f"{legacy}.db").touch()
    spec = WorkloadSpec(model="resnet18", data=str(tmp_path / "cats"))
    assert default_study_name(spec, 32, studies_dir=str(tmp_path)) == legacy
    assert default_study_name(spec, 32) == names["cats"]  # another storage: the new name


IDENTITY = {
    "model": "resnet18",
    "weights": "a" * 20,
    "data": "d" * 20,
    "images": 18,
    "resolution": 16,
    "normalization": [0.5] * 6,
    "split": {"seed": 0, "holdout": 0.5},
    "student": None,
}


def test_an_old_study_records_its_workload_on_first_resume():
    study = optuna.create_study()
    check_workload(study, "old", IDENTITY, WorkloadSpec())  # made before studies recorded theirs: not refused
    assert study.user_attrs[IDENTITY_ATTR] == IDENTITY
    check_workload(study, "old", dict(IDENTITY), WorkloadSpec())  # the same: goes on
    with pytest.raises(ConfigError, match=r"--seed 1 --holdout 0.5 \(the study's: --seed 0 --holdout 0.5\)"):
        check_workload(
            study, "old", {**IDENTITY, "split": {"seed": 1, "holdout": 0.5}, "data": "e" * 20}, WorkloadSpec()
        )
    with pytest.raises(ConfigError, match="the data in digits differ \\(as many images, other content\\)"):
        check_workload(study, "old", {**IDENTITY, "data": "e" * 20}, WorkloadSpec())
    with pytest.raises(ConfigError, match=r"another workload: the content of m\.onnx; pass --study NEW"):
        check_workload(study, "old", {**IDENTITY, "weights": "b" * 20}, WorkloadSpec(model="m.onnx"))


def _study_on(space: dict) -> optuna.Study:
    from tuner.space import load_space

    study = optuna.create_study()
    study.optimize(lambda t: (load_space(space).sample(t), 0.0)[1], n_trials=1)
    return study


def test_a_range_s_bounds_may_change_but_not_its_log_scale():
    from tuner.space import load_space

    study = _study_on({"placement": "torch-cpu", "prune_ratio": {"low": 0.0, "high": 0.5, "step": 0.1}})
    check_space(
        study, load_space({"placement": "torch-cpu", "prune_ratio": {"low": 0.0, "high": 0.7, "step": 0.1}}), "s"
    )  # merged: Optuna lets a range's bounds change
    with pytest.raises(ConfigError, match="prune_ratio gives the choices"):
        check_space(study, load_space({"placement": "torch-cpu", "prune_ratio": {"choices": [0.0, 0.5]}}), "s")
    study = _study_on({"placement": "torch-cpu", "batch_size": {"low": 1, "high": 8}})
    with pytest.raises(ConfigError, match="batch_size gives a log range 1-8 but study s sampled it from a range 1-8"):
        check_space(
            study, load_space({"placement": "torch-cpu", "batch_size": {"low": 1, "high": 8, "log": True}}), "s"
        )
