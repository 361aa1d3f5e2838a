"""Export kinds are plug-ins: the registry lists the built-in ones by the names in tuner.names, and a toy kind
registered here (the ONNX file under another name, with README lines and a verify check of its own) exports and
verifies through ``export`` / ``verify`` without any other module knowing it."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from tuner.artifact import checks_table, export, verify
from tuner.artifact.check import Check
from tuner.artifact.kinds import registry
from tuner.artifact.kinds.base import ExportKind, Saved
from tuner.errors import ConfigError
from tuner.names import EXPORT_ONNX, EXPORT_OPENVINO_IR, EXPORT_STATE_DICT, EXPORT_TORCH_PROGRAM, PLACEMENTS
from tuner.results import completed

TOY_FILE = "toy-model.onnx"


class ToyOnnx(ExportKind):
    """The ONNX file of an ONNX Runtime CPU placement, saved as toy-model.onnx."""

    name, runtime, files = "toy-onnx", "ONNX Runtime (toy kind)", (TOY_FILE,)

    def serves(self, job):
        return job.built.onnx_path is not None and job.candidate.placement == "ort-cpu"

    def save(self, job, directory):
        shutil.copyfile(job.built.onnx_path, directory / TOY_FILE)
        return Saved(TOY_FILE, details={"toy": {"copied_from": Path(job.built.onnx_path).name}})

    def load(self, directory, config, candidate, data):
        from tuner.passes.chain import Built

        path = directory / config["artifact"]["file"]
        return Built(candidate, None, path, 0, 0, path.stat().st_size)

    def code(self, config):
        return [
            "import numpy as np",
            "import onnxruntime as ort",
            "",
            f"session = ort.InferenceSession({TOY_FILE!r}, providers=['CPUExecutionProvider'])",
            f"x = np.zeros((2, 3, {config['data']['resolution']}, {config['data']['resolution']}), np.float32)",
            "print('toy', session.run(None, {session.get_inputs()[0].name: x})[0].shape)",
        ]

    def serve_code(self, config):
        return ["answers = [session.run(None, {session.get_inputs()[0].name: b})[0] for b in batches]"]

    def verify(self, session, config, same_machine):
        return [Check("toy file", config["artifact"]["toy"]["copied_from"], TOY_FILE, True)]


def test_the_built_in_kinds_are_registered_by_their_names():
    assert [k.name for k in registry.kinds()] == [
        EXPORT_OPENVINO_IR,
        EXPORT_ONNX,
        EXPORT_TORCH_PROGRAM,
        EXPORT_STATE_DICT,
    ]
    assert set(registry.model_files()) == {"model.onnx", "model.xml", "model.bin", "model.pt2", "state_dict.pt"}
    with pytest.raises(ConfigError, match="unknown artifact kind 'toy-onnx'"):
        registry.get("toy-onnx")


def test_register_puts_a_kind_ahead_and_unregister_removes_it():
    try:
        registry.register(ToyOnnx())
        assert registry.kinds()[0].name == "toy-onnx" and registry.get("toy-onnx").files == (TOY_FILE,)
        assert TOY_FILE in registry.model_files()
    finally:
        registry.unregister("toy-onnx")
    assert "toy-onnx" not in [k.name for k in registry.kinds()] and TOY_FILE not in registry.model_files()


@pytest.mark.slow  # a real study, export and verify
def test_a_toy_kind_exports_and_verifies_without_other_modules_knowing_it(small_study, tmp_path):
    study = optuna.load_study(study_name=small_study["name"], storage=small_study["storage"])
    ort = [t for t in completed(study) if PLACEMENTS[t.candidate["placement"]].runtime == "ort"]
    assert ort, "the seeded small study should hold a completed ort-cpu trial"
    out = tmp_path / "toy"
    registry.register(ToyOnnx())
    try:
        done = export(study, ort[0], "test", out, small_study["studies_dir"])
        assert done.kind == "toy-onnx" and done.artifact == TOY_FILE
        assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "profile.json", TOY_FILE]
        config = yaml.safe_load((out / "config.yaml").read_text())
        art = config["artifact"]
        assert art["kind"] == "toy-onnx" and art["toy"] == {"copied_from": "model.onnx"}
        assert set(art["files"]) == {TOY_FILE}

        # the README holds the kind's own lines, and they run as written
        readme = (out / "README.md").read_text()
        assert "ONNX Runtime (toy kind)" in readme
        code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
        r = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"toy (2, {len(config['data']['classes'])})"

        ok, checks = verify(out, 1.0)  # shared machine: latency within 2x
        assert ok, checks_table(checks)
        assert [c.name for c in checks if c.name == "toy file"] == ["toy file"]
        assert {c.name: c.ok for c in checks}["accuracy"] is True
    finally:
        registry.unregister("toy-onnx")
    # without the kind, its export is one it cannot read: a clear refusal (exit 2), not a trace
    with pytest.raises(ConfigError, match="unknown artifact kind 'toy-onnx'"):
        verify(out, 1.0)
