"""A model brought as an ONNX file: prepared under the tuner's names with a symbolic batch and counted
(tuner.onnx_model), searched over what needs no torch graph (the space drops the rest, saying so), its baseline
the file itself on ort-cpu fp32, reaching int8 on ort-cpu and ov-cpu, exported and verified; and the same
through ``tuner.tune`` with a metric of the user's. Bad files: tests/test_hostile.py ("onnx-...")."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml

from tests.conftest import run_tuner
from tuner.errors import ConfigError
from tuner.names import INPUT, OUTPUT
from tuner.space import load_space

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

SPACE = {
    "placement": {"choices": ["torch-cpu", "ort-cpu", "ov-cpu"]},
    "precision": {
        "per": "placement",
        "choices": {"torch-cpu": ["fp32"], "ort-cpu": ["fp32", "int8"], "ov-cpu": ["fp32", "int8"]},
    },
    "prune_ratio": {"choices": [0.0, 0.5]},
    "fold_bn": {"choices": [False, True], "when": {"placement": ["torch-cpu"]}},
    "batch_size": {"choices": [1, 8]},
    "threads": 1,
}


@pytest.fixture(scope="module")
def tiny_onnx(workload, tmp_path_factory) -> Path:
    """The tests' trained tiny CNN (digits, 16 px) as a user exports it: a fixed batch of 1, names of its own."""
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            workload.reference_model(),
            (torch.from_numpy(workload.data.example(1)),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["images"],
            output_names=["scores"],
        )
    return path


def test_the_file_is_prepared_under_the_tuners_names_with_a_symbolic_batch_and_counted(tiny_onnx, tmp_path):
    from tuner.onnx_model import count, prepare, read_signature

    sig = read_signature(tiny_onnx)
    assert (sig.input, sig.output, sig.batch, sig.height, sig.classes) == ("images", "scores", 1, 16, 10)
    graph = onnx.load(str(prepare(tiny_onnx, tmp_path / "p.onnx"))).graph
    assert [i.name for i in graph.input] == [INPUT] and [o.name for o in graph.output] == [OUTPUT]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    macs, params = count(tmp_path / "p.onnx", 16)
    # conv 3->32 at 16 x 16, conv 32->64 at 8 x 8 (3 x 3 kernels), linear 256->10; BatchNorm folded by the export
    assert macs == 16 * 16 * 32 * 3 * 9 + 8 * 8 * 64 * 32 * 9 + 256 * 10
    assert params == (32 * 3 * 9 + 32) + (64 * 32 * 9 + 64) + (256 * 10 + 10)


def test_the_space_drops_what_needs_the_torch_graph_and_says_so():
    space = load_space("default").without_torch_graph("m.onnx is an ONNX file")
    assert "torch-cpu" not in space.placements and {"ort-cpu", "ov-cpu"} <= set(space.placements)
    assert space.values("prune_ratio") == (0.0,) and space.values("fold_bn") == (False,)
    dropped = "\n".join(space.dropped)
    for what in ("torch-cpu: needs the torch graph", "prune_ratio 0-0.6: needs the torch graph", "fold_bn True"):
        assert what in dropped, dropped
    assert all(p.name != "precision" or "torch-cpu" not in p.choices for p in space.params)
    with pytest.raises(ConfigError, match="no placement of this space runs without the torch graph"):
        load_space({"placement": "torch-cpu"}).without_torch_graph("m.onnx is an ONNX file")


def test_a_study_of_the_file_reaches_int8_on_ort_and_openvino_then_exports_and_verifies(tiny_onnx, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    studies = tmp_path / "studies"
    r = run_tuner(
        "--model",
        str(tiny_onnx),
        "--resolution",
        "16",
        "--space",
        str(space),
        "--n-trials",
        "6",
        "--studies-dir",
        str(studies),
        "--remeasure-rounds",
        "0",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    for line in ("fixed batch of 1", "dropped torch-cpu: needs the torch graph", "dropped prune_ratio 0.5: needs"):
        assert line in r.stderr, r.stderr
    out = json.loads(r.stdout)
    assert out["study"].startswith("tiny-digits-16px")
    import optuna

    study = optuna.load_study(study_name=out["study"], storage=out["storage"])
    done = [t for t in study.trials if "metrics" in t.user_attrs]
    base = study.trials[0]
    assert base.user_attrs["baseline"] and base.user_attrs["candidate"]["placement"] == "ort-cpu"
    assert base.user_attrs["candidate"]["precision"] == "fp32"
    # the reference is the file's own top-1 on the validation split: the baseline's, measured apart
    assert study.user_attrs["reference"]["accuracy"] == pytest.approx(base.user_attrs["metrics"]["accuracy"])
    assert all(
        t.user_attrs["candidate"]["placement"] != "torch-cpu" and t.user_attrs["candidate"]["prune_ratio"] == 0
        for t in done
    )
    int8 = {
        t.user_attrs["candidate"]["placement"]: t
        for t in done
        if t.user_attrs["metrics"]["executed_precision"] == "int8"
    }
    assert {"ort-cpu", "ov-cpu"} <= set(int8), [t.user_attrs["candidate"] for t in done]  # the anchors, at least
    speedups = {e["number"]: e["speedup"] for e in out["pareto"]}
    assert speedups and all(s and s > 0 for s in speedups.values())
    pick = int8["ov-cpu"].number
    deploy = tmp_path / "deploy"
    r = run_tuner(
        "export", "--study", out["study"], "--studies-dir", str(studies), "--trial", str(pick), "--out", str(deploy)
    )
    assert r.returncode == 0, r.stderr
    assert {"model.xml", "model.bin", "model.onnx", "config.yaml", "README.md"} <= {p.name for p in deploy.iterdir()}
    r = run_tuner("verify", str(deploy), "--latency-tolerance", "1.0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduces" in r.stdout


def test_tune_with_a_metric_scores_the_files_own_logits(tiny_onnx, workload, tmp_path):
    """The study's accuracy is the metric on the logits of the file as given (computed here apart, in ORT)."""
    import onnxruntime as ort

    import tuner

    def top2(logits, labels):
        return (logits.topk(2, dim=1).indices == labels[:, None]).any(1).float().mean()

    space = {**SPACE, "placement": {"choices": ["ort-cpu"]}, "batch_size": 8}
    result = tuner.tune(
        str(tiny_onnx),
        "digits",
        resolution=16,
        metric=top2,
        space=space,
        n_trials=3,
        studies_dir=str(tmp_path),
        study="onnx-metric",
        remeasure_rounds=0,
        progress=False,
        log=lambda m: None,
    )
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    data = workload.data
    logits = np.concatenate(
        [session.run(None, {"images": x[i : i + 1]})[0] for x, _ in data.batches(data.val, 256) for i in range(len(x))]
    )
    expected = float(top2(torch.from_numpy(logits), torch.from_numpy(data.val.labels)))
    reference = result.study.user_attrs["reference"]
    assert reference["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert reference["top1"] == pytest.approx(float(np.mean(logits.argmax(1) == data.val.labels)))
    assert result.baseline is not None and result.baseline.accuracy == pytest.approx(expected, abs=1e-6)
    frame = result.to_dataframe()
    assert len(frame) == len(result.study.trials)
    for column in (
        "trial",
        "pareto",
        "placement",
        "precision",
        "prune_ratio",
        "batch_size",
        "accuracy",
        "top1",
        "accuracy_drop",
        "per_sample_ms",
        "latency_ms",
        "latency_ci_low_ms",
        "remeasured_per_sample_ms",
    ):
        assert column in frame.columns, column
    assert result.pareto and result.best().trial in set(frame.trial)
    with pytest.raises(ConfigError, match="scores accuracy by"):  # resumed with another metric: refused
        tuner.tune(
            str(tiny_onnx),
            "digits",
            resolution=16,
            space=space,
            n_trials=4,
            studies_dir=str(tmp_path),
            study="onnx-metric",
            remeasure_rounds=0,
            progress=False,
            log=lambda m: None,
        )


class _FlattensByItsBatch(torch.nn.Module):
    """A classifier whose graph, exported with a fixed batch, reshapes to that batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = torch.nn.Conv2d(3, 4, 3, 2, 1), torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


def test_a_file_relying_on_its_batch_is_refused_with_an_export_line_of_its_own_names_that_works(tmp_path, monkeypatch):
    from tuner.errors import ModelError
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    model, x = _FlattensByItsBatch().eval(), torch.zeros(1, 3, 16, 16)
    spec = dict(data="digits", resolution=16, cache_dir=str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), "fixed.onnx", dynamo=False, input_names=["images"], output_names=["scores"])
    with pytest.raises(ModelError) as refused:
        load_workload(WorkloadSpec(model="fixed.onnx", **spec))
    line = str(refused.value).split("dynamic batch axis: ", 1)[1].rstrip(".")
    assert "input_names=['images']" in line and "'scores': {0: 'batch'}" in line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eval(line, {"torch": torch, "model": model, "x": (x,)})  # the line the user is told to run: model.onnx
    assert load_workload(WorkloadSpec(model="model.onnx", **spec)).onnx is not None


def test_torchs_default_exporter_works_in_the_projects_environment(tmp_path):
    """torch 2.13's default exporter (dynamo) needs onnxscript, a dependency of the project: a user's export runs."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, 16, 16),), str(tmp_path / "m.onnx"))
    assert [o.name for o in onnx.load(str(tmp_path / "m.onnx")).graph.output]


def test_export_and_verify_from_other_folders_of_a_study_given_relative_paths_and_the_files_resolution(
    tiny_onnx, tmp_path
):
    """`--model net.onnx` from the folder holding it, no --resolution (the file's 16 px, not digits' 32): the study
    records the absolute path and the resolution, so export run from another folder rebuilds it and verify, from
    a third, reproduces it; an export that recorded no resolution (as before) is verified at the data's."""
    import shutil

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    shutil.copy(tiny_onnx, project / "net.onnx")
    (project / "space.yaml").write_text(
        yaml.safe_dump(
            {"placement": "ort-cpu", "precision": {"choices": ["fp32", "int8"]}, "batch_size": 1, "threads": 1}
        )
    )
    r = run_tuner(
        "--model",
        "net.onnx",
        "--space",
        "space.yaml",
        "--n-trials",
        "2",
        "--studies-dir",
        "studies",
        "--remeasure-rounds",
        "0",
        "--json",
        cwd=project,
    )
    assert r.returncode == 0, r.stderr
    name = json.loads(r.stdout)["study"]
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{project / 'studies' / name}.db")
    assert study.user_attrs["workload"]["model"] == str(project / "net.onnx")
    assert study.user_attrs["workload"]["resolution"] == 16
    r = run_tuner(
        "export",
        "--study",
        name,
        "--studies-dir",
        str(project / "studies"),
        "--trial",
        "1",
        "--out",
        "deploy",
        cwd=elsewhere,
    )
    assert r.returncode == 0, r.stderr
    deploy = elsewhere / "deploy"
    r = run_tuner("verify", str(deploy), "--latency-tolerance", "1.0", cwd=tmp_path)
    assert r.returncode == 0 and "reproduces" in r.stdout, r.stdout + r.stderr

    config = yaml.safe_load((deploy / "config.yaml").read_text())
    config["workload"]["resolution"] = None  # what an export of a study that did not record it holds
    (deploy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    r = run_tuner("verify", str(deploy), "--latency-tolerance", "1.0", cwd=tmp_path)
    assert r.returncode == 0 and "reproduces" in r.stdout, r.stdout + r.stderr


def test_export_from_another_folder_of_a_study_that_recorded_a_relative_path_says_where_to_run_it(tmp_path):
    """Studies created before paths were recorded absolute: one line naming the flag and the fix, exit 2."""
    import optuna

    from tuner.candidate import Candidate
    from tuner.study.objective import baseline_candidate
    from tuner.workload_spec import WorkloadSpec

    storage = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=storage, directions=["maximize", "minimize"])
    study.set_user_attr("workload", WorkloadSpec(model="net.onnx", data="digits").to_record())
    candidate: Candidate = baseline_candidate(WorkloadSpec(model="net.onnx"))
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.9, 1.0],
            user_attrs={"candidate": candidate.to_dict(), "metrics": {"accuracy": 0.9, "per_sample_ms": 1.0}},
        )
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_tuner(
        "export", "--study", "old", "--storage", storage, "--trial", "0", "--out", str(tmp_path / "out"), cwd=tmp_path
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "recorded --model net.onnx relative to the folder it ran in" in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
