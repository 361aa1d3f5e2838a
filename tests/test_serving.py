"""A real study under load (objectives/latency_slo.yaml): what it records, its pick, the report's serving data,
the re-measure of its load figures in fresh processes, and the export / verify round trip of the serving settings."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import yaml

from tests.conftest import ROOT, TINY, run_tuner
from tests.test_native_export import run_readme
from tuner import hardware, results
from tuner.artifact import checks_table, verify
from tuner.measure.latency import LatencyPolicy
from tuner.names import LOAD_METRICS
from tuner.remeasure.orchestrate import remeasure_pareto
from tuner.remeasure.text import format_remeasure
from tuner.report.serving import budget_of
from tuner.report.writer import report_info

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.skipif(hardware.cores() < 2, reason="two streams need two CPUs"),
    pytest.mark.slow,
]

# ov-cpu int8 on the tiny CNN, at 1 or 2 streams of one thread (2 streams: 4 requests in flight, one infer
# request each); the budget is loose, so every trial is feasible and the pick is the one serving the most.
SPACE = {
    "placement": "ov-cpu",
    "precision": "int8",
    "batch_size": {"choices": [1, 4]},
    "threads": 1,
    "streams": {"choices": [1, 2]},
    "requests": {"choices": [0, 4]},
}
BUDGET_MS = 1000.0
TOLERANCE = 1.0  # a shared machine: figures under load must reproduce within 2x here (10% by default)


@pytest.fixture(scope="module")
def load_study(studies_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    space, objectives = folder / "space.yaml", folder / "slo.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    slo = yaml.safe_load((ROOT / "objectives" / "latency_slo.yaml").read_text())
    slo["constraints"]["open_p95_ms"]["max"] = BUDGET_MS
    slo["constraints"]["accuracy_drop"]["max"] = 20
    objectives.write_text(yaml.safe_dump(slo))
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
        "4",
        "--study",
        "serving",
        "--remeasure-rounds",
        "0",
        "--seed",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    storage = f"sqlite:///{studies_dir}/serving.db"
    return optuna.load_study(study_name="serving", storage=storage), json.loads(r.stdout.splitlines()[-1]), folder


def test_a_study_under_load_records_and_picks_by_throughput(load_study):
    study, found, _ = load_study
    done = results.completed(study)
    assert len(done) >= 3 and results.speed_metric(study) == "open_throughput"
    for t in done:  # every trial, the baseline too, measured under load: every figure the objectives may use
        m = t.metrics
        assert all(isinstance(m[k], float) and m[k] > 0 for k in LOAD_METRICS)
        assert m["load"]["closed"]["answered"] == m["load"]["closed"]["issued"]
        assert m["requests"] == (t.candidate["requests"] or t.candidate["streams"])
    pick = max((t for t in done if results.is_feasible(t)), key=lambda t: t.metrics["open_throughput"])
    best = found["best_feasible"]
    assert found["speed"] == "open_throughput" and best["number"] == pick.number
    base = results.baseline_trial(study).metrics
    assert best["speedup"] == pytest.approx(pick.metrics["open_throughput"] / base["open_throughput"])

    info = report_info(study)
    s = info.serving
    assert s is not None and (s.throughput, s.p95, s.budget_ms, s.best) == (
        "open_throughput",
        "open_p95_ms",
        BUDGET_MS,
        pick.number,
    )
    assert {p.number for p in s.points} == {t.number for t in done}
    assert all(p.p95_ms == study.trials[p.number].user_attrs["metrics"]["open_p95_ms"] for p in s.points)
    assert info.findings[0].startswith(
        f"under load, the feasible trial serving the most within the p95 budget of {BUDGET_MS:g} ms is #{pick.number} "
    )
    assert budget_of(["accuracy_drop <= 1", "open_p95_ms <= 20"], "open_p95_ms") == 20.0
    assert budget_of(["load_p95_ms >= 1 and load_p95_ms <= 5"], "load_p95_ms") == 5.0


def test_remeasure_takes_the_load_figures_again(load_study, studies_dir):
    study, _, _ = load_study
    summary = remeasure_pareto(study, str(studies_dir / "cache"), rounds=1, policy=LatencyPolicy(max_seconds=0.5))
    for e in summary.entries:
        assert e.error is None and e.load is not None
        m = study.trials[e.number].user_attrs["metrics"]
        for metric in LOAD_METRICS:
            assert e.load[metric]["study"] == m[metric] and len(e.load[metric]["rounds"]) == len(e.round_ms)
            assert e.load[metric]["median"] > 0 and isinstance(e.load[metric]["within_10pct"], bool)
    assert "under load, median of" in format_remeasure(summary)
    # The pick now goes by the re-measured throughput (ms per sample = 1000 / it).
    pts = {p.number: p for p in results.points(study)}
    e = summary.entries[-1]
    assert pts[e.number].remeasured_ms == pytest.approx(1000.0 / e.load["open_throughput"]["median"])


def test_export_records_the_serving_settings_and_verify_rechecks_them(load_study, studies_dir, tmp_path):
    study, _, _ = load_study
    two = [t for t in results.completed(study) if t.candidate["streams"] == 2]
    assert two, "the seeded study should hold a 2-stream trial"
    trial = two[0]
    out = tmp_path / "export"
    r = run_tuner(
        "export",
        "--study",
        "serving",
        "--studies-dir",
        str(studies_dir),
        "--trial",
        str(trial.number),
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load((out / "config.yaml").read_text())
    c, serving = config["candidate"], config["serving"]
    assert (serving["streams"], serving["requests"], serving["batch_size"], serving["threads"]) == (
        2,
        c["requests"] or 2,
        c["batch_size"],
        1,
    )
    assert serving["runtime"]["NUM_STREAMS"] == 2 and serving["runtime"]["infer_requests"] == serving["requests"]
    # Re-measured under the study's load, by its rule: Poisson arrivals at half of what its own closed loop answered.
    assert serving["load"]["utilisation"] == 0.5 and serving["load"]["open_rate"] is None
    export_load = config["metrics"]["export"]["load"]
    assert serving["load"]["open_rate_per_s"] == pytest.approx(0.5 * export_load["closed"]["requests_per_second"])
    compile_config = config["artifact"]["openvino"]["compile_config"]
    assert compile_config["NUM_STREAMS"] == 2 and compile_config["PERFORMANCE_HINT"] == "THROUGHPUT"
    readme = (out / "README.md").read_text()
    assert f"ov.AsyncInferQueue(compiled, {serving['requests']})" in readme and "Serve it as measured" in readme
    assert re.fullmatch(r"\['\d'\]", run_readme(out).strip())  # its lines run as written, the serving ones too

    ok, checks = verify(out, TOLERANCE)
    by_name = {ch.name: ch for ch in checks}
    assert ok, checks_table(checks)
    assert {"serving settings", "samples/s under load", "p95 ms under load", "p95 ms, open loop"} <= set(by_name)
    assert by_name["serving settings"].ok is True

    # Served otherwise than recorded (the runtime's read-back edited): verify says so, and fails.
    config["serving"]["runtime"]["NUM_STREAMS"] = 3
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    ok, checks = verify(out, TOLERANCE)
    assert not ok and "serving settings" in [ch.name for ch in checks if ch.ok is False]
