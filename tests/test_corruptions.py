"""Corruption robustness (tuner.corruptions, issue 30 item 2): the set is deterministic, keyed by what makes it and
made once (a second study reuses it); top-1 there differs from clean top-1; corruption_drop bounds a study through the
same rules as accuracy_drop; a trial bound to break it stops early; without kornia the opt-in is one line."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, SMALL_SPACE, TINY
from tuner import corruptions, results
from tuner.objectives import load_objectives

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def test_the_set_is_deterministic_and_keyed_by_what_makes_it(workload, tmp_path):
    data = workload.data
    first = corruptions.load(data, 0, tmp_path, None)
    n = len(data.val)
    assert first.split.images.shape == (5 * n, 3, data.resolution, data.resolution)
    assert first.split.images.dtype == np.uint8 and not first.split.images.flags.writeable  # memory-mapped
    assert np.array_equal(first.split.labels, np.tile(data.val.labels, 5))
    for i, kind in enumerate(corruptions.KINDS):  # each corruption changed the pixels
        assert not np.array_equal(first.split.images[i * n : (i + 1) * n], data.val.images), kind
    rows = slice(0, 64)
    again = corruptions.corrupt(np.asarray(data.val.images[rows]), "gaussian_noise", corruptions.Recipe(16, 0), 0)
    assert np.array_equal(again, first.split.images[rows])  # the same seed, the same noise
    other = corruptions.corrupt(np.asarray(data.val.images[rows]), "gaussian_noise", corruptions.Recipe(16, 1), 0)
    assert not np.array_equal(other, again)
    assert corruptions.key(data, 1) != corruptions.key(data, 0)  # the seed, the data, the resolution: in the key
    assert corruptions.key(dataclasses.replace(data, fingerprint="another"), 0) != corruptions.key(data, 0)
    assert corruptions.key(dataclasses.replace(data, resolution=24), 0) != corruptions.key(data, 0)
    assert (tmp_path / "data" / first.key / "images.npy").is_file()  # beside the decoded data


def test_a_measurement_bound_to_break_corruption_drop_stops_early(workload, tmp_path):
    from tuner.candidate import Candidate
    from tuner.errors import HopelessCandidate
    from tuner.measure import measure
    from tuner.passes.chain import build

    corrupted = corruptions.load(workload.data, 0, tmp_path, None)
    built = build(workload, Candidate(placement="torch-cpu", precision="fp32", batch_size=64, threads=1))
    m = measure(built, workload.data, corrupted=corrupted).to_dict()
    assert m["corruption_images"] == len(corrupted.split) and 0 <= m["corruption_accuracy"] <= 1
    assert m["corruption_accuracy"] == pytest.approx(np.mean(list(m["corruption_by_kind"].values())))
    assert m["corruption_accuracy"] != m["accuracy"]  # the corruptions change what the model answers
    with pytest.raises(HopelessCandidate, match=rf"stopped after \d+ of {len(corrupted.split)} corrupted images"):
        measure(built, workload.data, corrupted=corrupted, min_corruption=m["corruption_accuracy"] + 0.01)


def test_a_trial_over_the_corruption_bound_is_infeasible_everywhere():
    """A designed study under objectives/robust.yaml: the faster trial holds every other bound but loses 3 points on
    the corruption set; the front, the pick and export's choice leave it out."""
    import optuna

    from tests.recorded import add_measured
    from tuner.artifact.select import select_trial
    from tuner.summary import pareto_table, summarize

    objectives = load_objectives("robust")
    study = optuna.create_study(directions=list(objectives.directions), study_name="robust")
    study.set_user_attr("reference", {"accuracy": 0.9, "validation_images": 100, "num_classes": 2})
    study.set_user_attr("constraints", [str(c) for c in objectives.constraints])
    for i, (ms, corruption_drop) in enumerate([(5.0, 0.0), (1.0, 3.0), (2.0, 2.0)]):
        m = {
            "accuracy": 0.9,
            "accuracy_drop": 0.0,
            "per_sample_ms": ms,
            "latency_ms": ms,
            "latency_ci_ms": [ms, ms],
            "latency_p95_ms": ms,
            "throughput": 1000 / ms,
            "samples": 30,
            "size_mb": 1.0,
            "params": 1000,
            "macs": 10**6,
            "batch_size": 1,
            "executed_precision": "fp32",
            "threads": 1,
            "worst_class_drop": 0.0,
            "worst_class": 0,
            "flip_rate": 0.0,
            "flip_rate_correct": 0.0,
            "ece": 0.05,
            "ece_increase": 0.0,
            "corruption_accuracy": 0.7 - corruption_drop / 100,
            "corruption_drop": corruption_drop,
        }
        add_measured(
            study,
            objectives.values(m),
            m,
            {
                "placement": "ort-cpu",
                "precision": "fp32",
                "prune_ratio": 0.0,
                "batch_size": 1,
                "fold_bn": False,
                "graph_opt": "all",
            },
            objectives.constraints,
            baseline=i == 0,
        )
    assert not results.is_feasible(next(t for t in results.completed(study) if t.number == 1))
    assert 1 not in {t.number for t in results.front(study)}
    assert results.fastest_feasible(results.points(study)).point.number == 2  # at the bound: met
    assert select_trial(study, max_drop=1)[0].number == 2
    table = pareto_table(summarize(study, objectives))
    assert "corruption drop" in table and "fastest feasible: trial #2" in table and "corruption drop +2.00" in table
    from tuner.report import report_info

    said = " ".join(report_info(study).findings)  # the faster point that broke it, in words
    assert "#1" in said and "corruption_drop <= 2" in said, said


@pytest.mark.slow
def test_the_set_is_made_once_and_a_second_study_reuses_it(tmp_path):
    """Two studies on the same data, resolution and seed under objectives/robust.yaml: the first makes the set
    (and says what it costs), the second reads it; every trial records its corruption figures."""
    import tuner

    said: dict[str, list[str]] = {"first": [], "second": []}
    found = {}
    for name in said:
        found[name] = tuner.tune(
            f"{TINY}:conv_net",
            "digits",
            resolution=16,
            train_steps=60,
            recover_steps=10,
            space=SMALL_SPACE,
            objectives="robust",
            n_trials=2,
            studies_dir=str(tmp_path),
            study=name,
            remeasure_rounds=0,
            seed=0,
            progress=False,
            log=said[name].append,
        )
    made = [line for line in said["first"] if line.startswith("making the corruption set once")]
    assert len(made) == 1 and not any(line.startswith("making the corruption set") for line in said["second"])
    cost = next(line for line in said["second"] if line.startswith("corruption set: "))
    assert "from the cache" in cost and "images" in cost and " s;" in cost
    references = [tuner.load(n, studies_dir=str(tmp_path)).study.user_attrs["reference"]["corruption"] for n in said]
    assert references[0]["key"] == references[1]["key"] and references[0]["accuracy"] == references[1]["accuracy"]
    assert references[0]["accuracy"] != found["first"].baseline.accuracy  # corrupted top-1 is another figure
    for result in found.values():
        done = results.completed(result.study)
        assert done and all("corruption_drop" in r.metrics for r in done)
        baseline = next(r for r in done if r.baseline)
        assert baseline.metrics["corruption_drop"] == pytest.approx(0.0, abs=1e-9)  # the reference itself
        assert "corruption drop" in str(result)


def test_without_kornia_the_opt_in_is_one_line():
    """kornia blocked from import (as if not installed): --corruptions and robust.yaml each fail in one line naming
    what to install, exit 2, before anything loads."""
    block = "import sys; sys.modules['kornia'] = None; from tuner.cli import main; sys.exit(main(sys.argv[1:]))"
    for extra in (["--corruptions"], ["--objectives", "robust"]):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                block,
                "--model",
                f"{TINY}:conv_net",
                "--resolution",
                "16",
                "--studies-dir",
                "/nonexistent/never-made",
                *extra,
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "kornia" in lines[0] and "pip install 'kornia>=0.8'" in lines[0], r.stderr
