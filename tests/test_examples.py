"""The examples run as their docstrings say, with the small settings they document (CI runs them here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def test_tune_in_memory_runs_prints_the_pareto_rows_and_exports_the_pick(tmp_path):
    """A model of __main__, DataLoaders and macro-F1, in a script that calls tuner.tune at top level (no main
    guard: the trials' process must not run it again)."""
    out = tmp_path / "deploy"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "tune_in_memory.py"),
            "--tiny",
            "--studies-dir",
            str(tmp_path / "studies"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines.count("Pareto rows (accuracy = macro-F1):") == 1, r.stdout  # printed once: no re-run in a child
    head = lines.index("Pareto rows (accuracy = macro-F1):") + 1
    assert lines[head].split()[:6] == ["trial", "placement", "precision", "prune_ratio", "batch_size", "accuracy"]
    picked = next(line for line in lines if line.startswith("picked trial #"))
    trial = int(picked.split("#")[1].split()[0])
    rows = lines[head + 1 : lines.index(picked)]
    assert rows and all(len(row.split()) == 10 for row in rows), rows  # every column filled on the front
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["study"]["trial"] == trial and (out / config["artifact"]["file"]).is_file()
    exported = config["metrics"]["export"]
    # the export scored the study's own metric again on the rebuilt model: macro-F1 beside its top-1
    assert {"accuracy", "top1", "accuracy_drop"} <= set(exported) and 0 < exported["accuracy"] <= 1
    assert abs(exported["accuracy"] - config["metrics"]["study"]["accuracy"]) < 0.02
    assert config["data"]["preprocessed"] and "exactly as the data" in (out / "README.md").read_text()
    # the metric by its name wherever it is shown: the report's title, axes, table and header, and the table
    page = re.sub(r"<script.*?</script>", "", (tmp_path / "deploy.html").read_text(), flags=re.S)  # not plotly.js
    assert "macro_f1" in page and "top-1" not in page.lower()
