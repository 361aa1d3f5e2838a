"""Bad input, the way users give it: one line naming the problem and the fix, exit 2, no traceback,
nothing written. (More cases live beside the features: test_cli_measure.py, test_export.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from subprocess import CompletedProcess

import pytest
import torch
import yaml

from tests.conftest import TINY, make_image_folder, run_tuner

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments, a phrase the one-line error must contain)."""
    ok = _write(tmp / "ok.yaml", "precision: fp32\n")
    garbage = tmp / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    r34 = tmp / "resnet34.pt"
    from tuner.models import create_model

    torch.save(create_model("resnet34", 10).state_dict(), r34)
    one = make_image_folder(tmp / "one_class", classes=1, per_class=3, split=False)
    empty = tmp / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    bad_space = _write(tmp / "space.yaml", yaml.safe_dump({"batch_size": {"choices": [0]}}))
    bad_objectives = _write(tmp / "obj.yaml", yaml.safe_dump({"objectives": {"speed": "maximize"}}))
    measure = ["measure", "--config", ok]
    run = ["--model", f"{TINY}:conv_net", "--resolution", "16", "--train-steps", "5"]
    cases = {
        "unknown model": (["measure", "--model", "resnet19", "--config", ok], "unknown model 'resnet19'"),
        "bad callable": (["measure", "--model", "tests.tiny_models:nothing", "--config", ok], "no callable"),
        "callable returns no module": (
            ["measure", "--model", f"{TINY}:not_a_model", "--config", ok],
            "not a torch.nn.Module",
        ),
        "missing model file": (["measure", "--model", "nowhere.py:net", "--config", ok], "does not exist"),
        "unimportable module": (["measure", "--model", "no_such_module:net", "--config", ok], "cannot import"),
        "corrupt weights": ([*measure, "--weights", str(garbage)], "not a loadable PyTorch state_dict"),
        "mismatched weights": ([*measure, "--weights", str(r34)], "do not match the model"),
        "missing weights": ([*measure, "--weights", str(tmp / "none.pt")], "does not exist"),
        "missing data dir": ([*measure, "--data", str(tmp / "nodata")], "does not exist"),
        "empty data dir": ([*measure, "--data", str(empty)], "no images"),
        "one-class ImageFolder": ([*measure, "--data", str(one)], "at least 2"),
        "malformed YAML": (["measure", "--config", _write(tmp / "m.yaml", "precision: [fp32\n")], "not valid YAML"),
        "config not a mapping": (["measure", "--config", _write(tmp / "l.yaml", "- fp32\n")], "expected a mapping"),
        "out-of-range prune ratio": (
            ["measure", "--config", _write(tmp / "p.yaml", "prune_ratio: 1.2\n")],
            "0 <= prune_ratio < 1",
        ),
        "unknown config key": (["measure", "--config", _write(tmp / "k.yaml", "speed: max\n")], "unknown key"),
        "unknown placement": (
            ["measure", "--config", _write(tmp / "u.yaml", "placement: tpu\n")],
            "placement must be one of",
        ),
        "bf16 on ort-cpu": (
            ["measure", "--config", _write(tmp / "b.yaml", "precision: bf16\nplacement: ort-cpu\n")],
            "refused",
        ),
        "missing config": (["measure", "--config", str(tmp / "none.yaml")], "no such file"),
        "resolution out of range": ([*measure, "--resolution", "4"], "--resolution must be between"),
        "zero std": ([*measure, "--std", "0", "1", "1"], "--std takes three numbers"),
        "unreachable storage": (
            [*run, "--storage", "postgresql://tuner:hunter2@127.0.0.1:1/db", "--study", "x"],
            "cannot open storage postgresql://tuner:***@127.0.0.1:1/db",
        ),
        "not a database URL": ([*run, "--storage", "redis://127.0.0.1/0"], "is not a database URL"),
        "study name with path separators": ([*run, "--study", "../escape"], "is not allowed"),
        "unknown sampler": ([*run, "--sampler", "bayes"], "unknown sampler"),
        "unknown student": ([*run, "--student", "resnet19"], "unknown model 'resnet19'"),
        "student that is no module": ([*run, "--student", f"{TINY}:not_a_model"], "not a torch.nn.Module"),
        "student of an ONNX file": (
            ["--model", str(tmp / "m.onnx"), "--student", f"{TINY}:conv_net"],
            "distilled from the model's torch graph",
        ),
        "student on a config that asks for none": (
            ["measure", "--config", _write(tmp / "s.yaml", "student: true\n")],
            "no --student",
        ),
        "invalid space file": ([*run, "--space", bad_space], "batch_size must be an integer >= 1"),
        "missing space": ([*run, "--space", "nosuch"], "no such file"),
        "invalid objectives": ([*run, "--objectives", bad_objectives], "unknown metric 'speed'"),
        "zero trials": ([*run, "--n-trials", "0"], "--n-trials must be >= 1"),
        "report of a missing study": (["report", "--study", "ghost"], "ghost"),
        "export of a missing study": (["export", "--study", "ghost", "--trial", "1", "--out", str(tmp / "o")], "ghost"),
        "verify a folder that is no export": (["verify", str(tmp)], "config.yaml"),
    }
    if not torch.cuda.is_available():
        cases["CUDA without a GPU"] = (
            ["measure", "--config", _write(tmp / "c.yaml", "placement: torch-cuda\n")],
            "needs a CUDA GPU",
        )
    return cases


PARALLEL = 4  # subprocesses at a time: most of a refusal is interpreter and import start-up (as test_hostile.py)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return _cases(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def outcomes(cases, request: pytest.FixtureRequest, tmp_path_factory) -> dict[str, tuple[Path, CompletedProcess]]:
    """Every selected case run once, PARALLEL at a time, each with a --studies-dir of its own (verify takes none)."""
    selected = {
        item.callspec.params["name"]
        for item in request.session.items
        if item.originalname == "test_bad_input_gets_one_line_and_exit_2" and hasattr(item, "callspec")
    }
    base = tmp_path_factory.mktemp("bad-studies")

    def go(name: str) -> tuple[str, tuple[Path, CompletedProcess]]:
        args, _ = cases[name]
        studies = base / str(sorted(cases).index(name)) / "studies"
        return name, (
            studies,
            run_tuner(*args, "--studies-dir", str(studies)) if args[0] != "verify" else run_tuner(*args),
        )

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(pool.map(go, sorted(selected & set(cases))))


def test_there_are_at_least_25_cases(cases):
    assert len(cases) >= 25


@pytest.mark.parametrize(
    "name",
    [
        "unknown model",
        "bad callable",
        "callable returns no module",
        "missing model file",
        "unimportable module",
        "corrupt weights",
        "mismatched weights",
        "missing weights",
        "missing data dir",
        "empty data dir",
        "one-class ImageFolder",
        "malformed YAML",
        "config not a mapping",
        "out-of-range prune ratio",
        "unknown config key",
        "unknown placement",
        "bf16 on ort-cpu",
        "missing config",
        "resolution out of range",
        "zero std",
        "unreachable storage",
        "not a database URL",
        "study name with path separators",
        "unknown sampler",
        "unknown student",
        "student that is no module",
        "student of an ONNX file",
        "student on a config that asks for none",
        "invalid space file",
        "missing space",
        "invalid objectives",
        "zero trials",
        "report of a missing study",
        "export of a missing study",
        "verify a folder that is no export",
        "CUDA without a GPU",
    ],
)
def test_bad_input_gets_one_line_and_exit_2(cases, outcomes, name):
    if name not in cases:
        pytest.skip("this machine has a GPU")
    args, needle = cases[name]
    studies, r = outcomes[name]
    assert r.returncode == 2, (r.stdout, r.stderr)
    # a study prints its setup lines before it refuses; every other command, the one line alone
    setup = ("study ", "placements", "  dropped", "objectives") if args[0] == "--model" else ()
    lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith(setup)]
    assert len(lines) == 1 and lines[0].startswith("tuner: error:"), r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr and "hunter2" not in r.stderr + r.stdout
    assert not [p for p in _files(studies) if p.suffix == ".db"], "no study was written"
