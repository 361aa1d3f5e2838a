"""Runtime-native exports: an ov-cpu pick is exported as the OpenVINO IR beside its ONNX file, with its compile
config recorded; verify reloads the IR through OpenVINO and re-measures it; every export's README.md holds lines
that, run as written from the export directory, load the model in its runtime and print a prediction."""

import os
import re
import subprocess
import sys

import optuna
import pytest
import yaml

from tests.conftest import TINY, run_tuner
from tuner.artifact import checks_table, export, verify
from tuner.cache import sha256_file
from tuner.errors import ConfigError
from tuner.record import read_trial
from tuner.runtimes.registry import PLACEMENTS

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.slow,
]  # end to end: studies, exports and processes (pytest -m "not slow" skips)

TEST_LATENCY_TOLERANCE = 1.0  # a shared machine: latency within 2x here, accuracy exactly (see test_export.py)
needs_openvino = pytest.mark.skipif(
    bool(PLACEMENTS["ov-cpu"].unavailable()), reason=str(PLACEMENTS["ov-cpu"].unavailable())
)


def readme_code(directory):
    """The README's python code block, exactly as written."""
    text = (directory / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, text
    return blocks[0]


def run_readme(directory):
    """Run the README's lines in a fresh interpreter from the export directory (no tuner on the path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [sys.executable, "-c", readme_code(directory)],
        cwd=directory,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def ov_study(studies_dir, tmp_path_factory):
    """A 2-trial study on the tiny CNN whose searched trial is ov-cpu int8 (the baseline is trial #0); the same
    workload as the session's small study, so the trained baseline comes from the shared cache."""
    if PLACEMENTS["ov-cpu"].unavailable():
        pytest.skip(PLACEMENTS["ov-cpu"].unavailable())
    folder = tmp_path_factory.mktemp("ov_space")
    space, objectives = folder / "space.yaml", folder / "objectives.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "placement": {"choices": ["ov-cpu"]},
                "precision": {"choices": ["int8"]},
                "prune_ratio": 0.0,
                "fold_bn": True,
                "batch_size": 1,
                "threads": 1,
            }
        )
    )
    objectives.write_text(
        yaml.safe_dump(
            {
                "objectives": {"accuracy": "maximize", "per_sample_ms": "minimize"},
                "constraints": {"accuracy_drop": {"max": 20}},
            }
        )
    )
    r = run_tuner(
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "80",
        "--recover-steps",
        "20",
        "--studies-dir",
        str(studies_dir),
        "--space",
        str(space),
        "--objectives",
        str(objectives),
        "--n-trials",
        "2",
        "--study",
        "ov_native",
        "--remeasure-rounds",
        "0",
        "--seed",
        "0",
    )
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="ov_native", storage=f"sqlite:///{studies_dir}/ov_native.db")
    ov = [
        t
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs["candidate"]["placement"] == "ov-cpu"
    ]
    assert ov, "the study should hold a completed ov-cpu trial"
    return {"name": "ov_native", "studies_dir": str(studies_dir), "trial": ov[0]}


@pytest.fixture(scope="module")
def ov_export(ov_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("native") / "ov"
    r = run_tuner(
        "export",
        "--study",
        ov_study["name"],
        "--studies-dir",
        ov_study["studies_dir"],
        "--trial",
        str(ov_study["trial"].number),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    return out


@needs_openvino
def test_ov_export_holds_the_ir_beside_the_onnx_with_its_compile_config(ov_export):
    out = ov_export
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.yaml",
        "model.bin",
        "model.onnx",
        "model.xml",
        "profile.json",
    ]
    config = yaml.safe_load((out / "config.yaml").read_text())
    art = config["artifact"]
    assert art["kind"] == "openvino-ir" and art["file"] == "model.xml" and art["runtime"] == "ov-cpu"
    assert art["files"] == {name: sha256_file(out / name) for name in ("model.bin", "model.onnx", "model.xml")}
    pinned = len(os.sched_getaffinity(0)) == 1  # one thread pins only where it is every CPU there is
    assert art["openvino"]["compile_config"] == {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": 1,
        "ENABLE_CPU_PINNING": pinned,
    }
    assert config["metrics"]["export"]["executed_precision"] == "int8"

    import openvino

    model = openvino.Core().read_model(str(out / "model.xml"))  # plain OpenVINO, as a deployment would
    assert [i.get_any_name() for i in model.inputs] == ["input"]
    assert "logits" in model.outputs[0].get_names()


@needs_openvino
def test_verify_reloads_the_ir_and_remeasures_it(ov_export):
    ok, checks = verify(ov_export, TEST_LATENCY_TOLERANCE)
    table = checks_table(checks)
    assert ok, table
    names = [c.name for c in checks]
    assert {
        "artifact sha256",
        "sha256 model.bin",
        "sha256 model.onnx",
        "OpenVINO compile config",
        "accuracy",
        "executed precision",
        "latency ms/batch",
    } <= set(names), names
    assert next(c for c in checks if c.name == "executed precision").now == "int8"  # the IR runs int8 as the ONNX did

    r = run_tuner("verify", str(ov_export), "--latency-tolerance", str(TEST_LATENCY_TOLERANCE))
    assert r.returncode == 0 and "openvino-ir on ov-cpu" in r.stdout + r.stderr, r.stdout + r.stderr


@needs_openvino
@pytest.mark.parametrize("name", ["model.bin", "model.xml"])
def test_a_changed_or_truncated_ir_file_is_a_damaged_export(ov_export, tmp_path, name):
    """Checked by sha256 before OpenVINO reads anything: one line, exit 2 (the CLI), nothing changed."""
    import shutil

    copy = tmp_path / "ov"
    shutil.copytree(ov_export, copy)
    changed = copy / name
    changed.write_bytes(changed.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match=f"is damaged: {name} .* does not match the sha256"):
        verify(copy, TEST_LATENCY_TOLERANCE)
    with open(changed, "r+b") as f:
        f.truncate(changed.stat().st_size // 2)
    before = sorted((p.name, p.read_bytes()) for p in copy.iterdir())
    r = run_tuner("verify", str(copy))
    errors = [line for line in r.stderr.splitlines() if line.startswith("tuner: error:")]
    assert r.returncode == 2 and errors == r.stderr.strip().splitlines()[-1:] and name in errors[0], r.stderr
    assert "Traceback" not in r.stderr and sorted((p.name, p.read_bytes()) for p in copy.iterdir()) == before


@needs_openvino
def test_ov_readme_lines_run_as_written_and_print_a_prediction(ov_export):
    config = yaml.safe_load((ov_export / "config.yaml").read_text())
    code = readme_code(ov_export)
    assert 'read_model("model.xml")' in code and f"'ENABLE_CPU_PINNING': {len(os.sched_getaffinity(0)) == 1}" in code
    assert "/ 255.0 - mean) / std" in code and '"input"' in code and '"logits"' in code
    printed = run_readme(ov_export).strip()
    assert re.fullmatch(r"\['\d'\]", printed), printed  # one digit class for the one image
    assert printed[2] in config["data"]["classes"]


def test_onnx_and_torch_export_readmes_run_as_written(small_study, tmp_path):
    """ONNX Runtime (int8), torch.export and state_dict exports of the session's small study: their README lines
    print a prediction too, and say the preprocessing."""
    study = optuna.load_study(study_name=small_study["name"], storage=small_study["storage"])
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    picks = {p: next(t for t in done if t.user_attrs["candidate"]["placement"] == p) for p in ("ort-cpu", "torch-cpu")}
    for placement, trial in picks.items():
        out = tmp_path / placement
        r = run_tuner(
            "export",
            "--study",
            small_study["name"],
            "--studies-dir",
            small_study["studies_dir"],
            "--trial",
            str(trial.number),
            "--out",
            str(out),
        )
        assert r.returncode == 0, r.stderr
        text = (out / "README.md").read_text()
        assert "(pixels / 255 - mean) / std" in text and "NCHW float32" in text
        assert "Input `input`" in text and "output `logits`" in text
        code = readme_code(out)
        assert ("onnxruntime" in code) == (placement == "ort-cpu") and ("torch.export.load" in code) == (
            placement == "torch-cpu"
        )
        assert re.fullmatch(r"\['\d'\]", run_readme(out).strip())

    # the state_dict form (torch.export's fallback) rebuilds the module with the tuner package, as its README says
    done = export(
        study,
        read_trial(picks["torch-cpu"]),
        "test",
        tmp_path / "state",
        small_study["studies_dir"],
        torch_format="state_dict",
    )
    assert done.kind == "state_dict" and "rebuild_module(" in readme_code(done.out)
    assert re.fullmatch(r"\['\d'\]", run_readme(done.out).strip())
