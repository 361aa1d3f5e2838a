"""`tuner measure` end to end, and its one-line errors (exit 2, no traceback): those of its own here, the ones every
command shares (unknown model, missing data, unreadable weights or config) in test_bad_input.py."""

import json

import pytest
import torch
import yaml

from tests.conftest import TINY, run_tuner

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def _config(tmp_path, **fields):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def _workload_args(studies_dir):
    return [
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
    ]


def test_measure_json_end_to_end(tmp_path, studies_dir):
    config = _config(tmp_path, precision="int8", placement="ort-cpu", batch_size=2, prune_ratio=0.25)
    r = run_tuner("measure", *_workload_args(studies_dir), "--config", config, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in (
        "accuracy",
        "latency_ms",
        "latency_p95_ms",
        "latency_ci_ms",
        "samples",
        "per_sample_ms",
        "throughput",
        "params",
        "macs",
        "config",
        "executed_precision",
    ):
        assert key in out
    assert out["config"]["precision"] == "int8" and out["executed_precision"] == "int8"
    # per-batch figures at batch 2, per-sample ones half of them; the CI an interval of the per-batch median
    assert out["config"]["batch_size"] == 2
    assert out["per_sample_ms"] == pytest.approx(out["latency_ms"] / 2)
    assert out["throughput"] == pytest.approx(2000 / out["latency_ms"])
    assert out["per_sample_ms"] < out["latency_ci_ms"][0] < out["latency_ci_ms"][1]
    assert out["accuracy"] > 0.5


def test_measure_config_is_what_the_cli_prints(tmp_path, studies_dir):
    """``tuner.measure_config`` is the flow ``tuner measure`` is a thin layer over: for the same inputs (the build
    cached by the CLI's run) the same keys, the same accuracy, model and configuration, a latency of the same order."""
    import tuner

    config = _config(tmp_path, precision="int8", placement="ort-cpu", batch_size=2, prune_ratio=0.25)
    r = run_tuner("measure", *_workload_args(studies_dir), "--config", config, "--json")
    assert r.returncode == 0, r.stderr
    cli = json.loads(r.stdout)
    lines: list[str] = []
    done = tuner.measure_config(
        config,
        f"{TINY}:conv_net",
        resolution=16,
        train_steps=80,
        recover_steps=20,
        studies_dir=str(studies_dir),
        log=lines.append,
    )
    api = done.to_dict()
    assert set(api) == set(cli)
    for key in (
        "accuracy",
        "holdout_accuracy",
        "params",
        "macs",
        "size_mb",
        "compressed_mb",
        "config",
        "executed_precision",
        "layer_precisions",
        "float_layers",
        "threads",
        "streams",
        "batch_size",
    ):
        assert api[key] == cli[key], key
    assert done.metrics.per_sample_ms == pytest.approx(cli["per_sample_ms"], rel=2.0)  # timed again: same order
    assert any(line.startswith("using the cached baseline") for line in lines), lines  # its lines, to its log


def test_measure_config_refuses_bad_input_naming_its_keywords(tmp_path):
    """Checked before torch loads: a bad key or value, and a student without one, in one line naming the keyword."""
    import tuner
    from tuner.errors import ConfigError, TunerError

    with pytest.raises(ConfigError, match="precision"):
        tuner.measure_config({"precision": "int9"}, studies_dir=str(tmp_path))
    with pytest.raises(TunerError, match="student: true is refused: no student SPEC"):
        tuner.measure_config({"student": True}, f"{TINY}:conv_net", studies_dir=str(tmp_path))
    with pytest.raises(TunerError, match="resolution"):
        tuner.measure_config({}, f"{TINY}:conv_net", resolution=0, studies_dir=str(tmp_path))


def test_measure_on_an_image_folder(tmp_path, image_folder):
    config = _config(tmp_path, placement="ort-cpu")
    r = run_tuner(
        "measure",
        "--model",
        f"{TINY}:mobile_net",
        "--data",
        str(image_folder),
        "--resolution",
        "20",
        "--train-steps",
        "20",
        "--studies-dir",
        str(tmp_path / "s"),
        "--config",
        config,
    )
    assert r.returncode == 0, r.stderr
    assert "training a" in r.stderr and "accuracy" in r.stdout


def _expect_one_line_error(r, needle):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tuner: error:") and needle in lines[0], r.stderr


def test_error_weights_with_other_class_count(tmp_path):
    from tuner.models import create_model

    weights = tmp_path / "w.pt"
    torch.save(create_model("resnet18", 1000).state_dict(), weights)
    r = run_tuner("measure", "--weights", str(weights), "--config", _config(tmp_path))
    _expect_one_line_error(r, "1000-class classifier but the data has 10 classes")


def test_error_unsupported_combination(tmp_path):
    config = _config(tmp_path, precision="int8", placement="torch-cpu")  # bf16 on ort-cpu: test_bad_input.py
    _expect_one_line_error(run_tuner("measure", "--config", config), "refused")


def test_error_bad_flag():
    _expect_one_line_error(run_tuner("measure", "--resolution", "abc", "--config", "x.yaml"), "invalid int value")
