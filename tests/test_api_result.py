"""What ``tune()`` returns agrees with what ``tuner run --json`` prints for the same study: the front and each
point's speedup, which goes by the study's speed figure (per-sample latency, or in a study under load its
throughput objective: ``tuner.results.speedup_over``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, SMALL_SPACE, TINY, run_tuner
from tests.test_serving import SPACE as SERVING_SPACE
from tuner import hardware
from tuner.errors import TunerError

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)

WORKLOAD = ("--model", f"{TINY}:conv_net", "--resolution", "16", "--train-steps", "80", "--recover-steps", "20")


def _throughput_objectives() -> dict:
    """objectives/throughput.yaml with a loose accuracy bound, so that the tiny CNN's int8 points are feasible."""
    objectives = yaml.safe_load((ROOT / "objectives" / "throughput.yaml").read_text())
    objectives["constraints"]["accuracy_drop"]["max"] = 20
    return objectives


@pytest.mark.parametrize("case", ["accuracy_latency", "throughput"])
def test_tune_pareto_speedups_are_tuner_runs(case, studies_dir, tmp_path):
    if case == "throughput" and hardware.cores() < 2:
        pytest.skip("two streams need two CPUs")
    space, objectives = (
        (SMALL_SPACE, yaml.safe_load((ROOT / "objectives" / "accuracy_latency.yaml").read_text()))
        if case == "accuracy_latency"
        else (SERVING_SPACE, _throughput_objectives())
    )
    space_file, objectives_file = tmp_path / "space.yaml", tmp_path / "objectives.yaml"
    space_file.write_text(yaml.safe_dump(space))
    objectives_file.write_text(yaml.safe_dump(objectives))
    name = f"speedups-{case}"
    r = run_tuner(
        *WORKLOAD,
        "--studies-dir",
        str(studies_dir),
        "--space",
        str(space_file),
        "--objectives",
        str(objectives_file),
        "--n-trials",
        "3",
        "--study",
        name,
        "--remeasure-rounds",
        "0",
        "--seed",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout.splitlines()[-1])

    import tuner

    # The same study resumed through the Python API: it holds its trials already, none is added.
    result = tuner.tune(
        f"{TINY}:conv_net",
        "digits",
        resolution=16,
        train_steps=80,
        recover_steps=20,
        space=space,
        objectives=objectives,
        n_trials=3,
        studies_dir=str(studies_dir),
        study=name,
        remeasure_rounds=0,
        seed=1,
        progress=False,
        log=lambda m: None,
    )
    speedups = {p.trial: p.speedup for p in result.pareto}
    # A drop budget is in points; one that reads like a fraction is refused, naming the keyword, not the flag.
    with pytest.raises(TunerError, match=r"^max_drop 0.01 is ambiguous: .*write 1 for 1 points") as refused:
        result.best(max_drop=0.01)
    assert "--" not in str(refused.value)
    assert speedups == pytest.approx({e["number"]: e["speedup"] for e in printed["pareto"]})
    assert printed["speed"] == ("per_sample_ms" if case == "accuracy_latency" else "load_throughput")
    # Somewhere other than the baseline (1x by either rule), so that a per-sample speedup in a study under load
    # would show here.
    assert any(p.speedup is not None and abs(p.speedup - 1.0) > 1e-6 for p in result.pareto), speedups
    # One trial table: the report's CSV and the DataFrame have the same columns and rows.
    result.report(tmp_path / "report.html", csv=tmp_path / "trials.csv")
    frame, csv = result.to_dataframe(), pd.read_csv(tmp_path / "trials.csv")
    assert list(csv.columns) == list(frame.columns) and list(csv["trial"]) == list(frame["trial"])
    assert list(csv["speedup"].fillna(-1)) == pytest.approx(list(frame["speedup"].fillna(-1)))
    if case == "throughput":
        base = result.baseline
        assert base is not None
        for p in result.pareto:
            assert p.speedup == pytest.approx(p.metrics["load_throughput"] / base.metrics["load_throughput"])
