"""The rules of tuner.results: the report's front is the study's own for every shipped objectives file, and
the fastest-feasible pick with its re-measure reordering and tie-break."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest

from tests.recorded import add_measured
from tuner import results
from tuner.objectives import load_objectives
from tuner.report.page import render_html
from tuner.report.writer import report_info

OBJECTIVES = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "objectives").glob("*.yaml"))


def _metrics(rng: np.random.Generator, reference: float) -> dict:
    bs = int(rng.choice([1, 8, 32]))
    per_sample = float(rng.uniform(0.05, 5.0))
    accuracy = float(reference - rng.uniform(0.0, 0.04))
    capacity = 1000.0 / per_sample * float(rng.uniform(1.0, 2.0))  # under load: streams can add throughput
    return {
        "accuracy": accuracy,
        "accuracy_drop": 100 * (reference - accuracy),
        "per_sample_ms": per_sample,
        "latency_ms": per_sample * bs,
        "latency_p95_ms": per_sample * bs * rng.uniform(1.0, 1.5),
        "latency_ci_ms": [per_sample * bs * 0.97, per_sample * bs * 1.03],
        "batch_size": bs,
        "throughput": 1000.0 / per_sample,
        "size_mb": float(rng.uniform(0.5, 50)),
        "compressed_mb": float(rng.uniform(0.1, 40)),
        "params": 1000,
        "macs": int(rng.integers(10**6, 10**9)),
        "executed_precision": "fp32",
        "threads": 1,
        "samples": 30,
        "load_throughput": capacity,
        "load_p50_ms": per_sample * bs,
        "load_p95_ms": per_sample * bs * 1.2,
        "load_p99_ms": per_sample * bs * 1.5,
        "open_throughput": capacity / 2,
        "open_p50_ms": per_sample * bs,
        "open_p95_ms": per_sample * bs * float(rng.uniform(1.5, 4.0)),
        "open_p99_ms": per_sample * bs * 5,
        **_guardrails(np.random.default_rng(int(per_sample * 1e6))),
    }  # its own draws: the rest stay as they were


def _guardrails(rng: np.random.Generator) -> dict:
    """Guardrail figures (tuner.guardrails) that objectives/guarded.yaml's bounds split about 6 to 1 each, and a
    corruption drop that robust.yaml's splits about 4 to 1."""
    flips = float(rng.uniform(0.0, 0.035))
    ece = float(rng.uniform(0.02, 0.1))
    return {
        "worst_class_drop": float(rng.uniform(0.0, 3.5)),
        "flip_rate": flips,
        "flip_rate_correct": flips / 2,
        "ece": ece,
        "ece_increase": float(rng.uniform(-0.01, 0.025)),
        "corruption_drop": float(rng.uniform(-0.5, 2.5)),
    }


def _study(objectives_name: str, n: int = 40, seed: int = 0) -> optuna.Study:
    """A study recorded the way tuner.study.loop.Objective records a trial (its writer, ``add_measured``):
    values and constraints from the objectives file, metrics and candidate as user attrs."""
    objectives = load_objectives(objectives_name)
    study = optuna.create_study(directions=list(objectives.directions))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives.names))
    study.set_user_attr("reference", {"accuracy": 0.95, "validation_images": 400})
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = _metrics(rng, 0.95)
        add_measured(
            study,
            objectives.values(m),
            m,
            {
                "placement": "ort-cpu",
                "precision": "fp32",
                "prune_ratio": 0.0,
                "batch_size": m["batch_size"],
                "fold_bn": False,
                "graph_opt": "all",
                "threads": 1,
            },
            objectives.constraints,
            baseline=i == 0,
        )
    return study


@pytest.mark.parametrize("name", OBJECTIVES)
def test_report_front_is_the_studys_front(name):
    study = _study(name)
    info = report_info(study)
    best = {t.number for t in study.best_trials}
    assert best and set(info.pareto) == best == {t.number for t in results.front(study)}
    assert all(info.row(n).feasible for n in info.pareto)  # best_trials is feasible-only under constraints
    assert not any(r.pareto for r in info.trials if r.number not in best)
    page = render_html(info)  # drawn over the file's own two objectives
    assert "Plotly.newPlot" in page and all(n in page for n in load_objectives(name).names)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_fastest_feasible_is_feasible_and_fastest(name):
    study = _study(name, seed=1)
    pick = results.fastest_feasible(results.points(study))
    trials = results.completed(study)
    feasible = [t for t in trials if results.is_feasible(t)]
    assert pick is not None and not pick.reordered and not pick.by_remeasure
    assert 0 < len(feasible) < len(trials) or not load_objectives(name).constraints  # the rule had to choose
    chosen = trials[pick.point.number]
    assert results.is_feasible(chosen)
    speed = results.speed_metric(study)  # a study under load ranks by its throughput objective: the most is fastest
    if speed is None:
        assert chosen.metrics["per_sample_ms"] == min(t.metrics["per_sample_ms"] for t in feasible)
    else:
        assert chosen.metrics[speed] == max(t.metrics[speed] for t in feasible)


def _p(number, ms, accuracy=0.9, again=None, feasible=True, drop=0.0):
    return results.Point(number, accuracy, drop, ms, feasible, again)


def test_the_remeasure_reorders_the_pick_among_re_timed_points():
    pts = [_p(0, 1.00, again=1.20), _p(1, 1.05, again=1.10), _p(2, 1.01), _p(3, 0.5, feasible=False)]
    pick = results.fastest_feasible(pts)
    assert pick.point.number == 1 and pick.study_point.number == 0 and pick.reordered and pick.by_remeasure
    # A study pick that was not re-timed stands: the re-measure only reorders what it timed.
    pick = results.fastest_feasible([_p(0, 1.00), _p(1, 1.05, again=0.9)])
    assert pick.point.number == 0 and not pick.reordered and not pick.by_remeasure


def test_ties_go_to_the_more_accurate_then_the_earlier_trial():
    assert results.fastest_feasible([_p(4, 1.0, 0.90), _p(2, 1.0, 0.92), _p(1, 1.0, 0.92)]).point.number == 1
    assert results.fastest_feasible([_p(0, 1.0, drop=2), _p(1, 2.0, drop=0.5)], max_drop=1).point.number == 1
    assert results.fastest_feasible([_p(0, 1.0, drop=2)], max_drop=1) is None


def test_most_accurate_within_a_budget():
    pts = [_p(0, 0.5, 0.90), _p(1, 0.9, 0.95), _p(2, 1.5, 0.99), _p(3, 0.8, 0.97, feasible=False)]
    assert results.most_accurate_within(pts, 1.0).number == 1  # #3 is more accurate but breaks a constraint
    assert results.most_accurate_within(pts, 0.1) is None


@pytest.mark.parametrize("name", OBJECTIVES)
def test_the_apis_speedups_are_the_summarys(name):
    """``TuneResult.pareto[i].speedup`` is ``tuner run --json``'s (``summary.summarize``) under every objectives file:
    in a study under load both go by its throughput objective, not by per-sample latency."""
    from tuner.api.tune_result import TuneResult
    from tuner.metric import TOP1_METRIC
    from tuner.summary import summarize

    study, objectives = _study(name, seed=2), load_objectives(name)
    result = TuneResult(study, objectives, TOP1_METRIC, studies_dir="unused", storage="unused")
    printed = {e["number"]: e["speedup"] for e in summarize(study, objectives)["pareto"]}
    assert {p.trial: p.speedup for p in result.pareto} == pytest.approx(printed) and len(printed) > 1
    speed, base = results.speed_metric(study), result.baseline
    for p in result.pareto:
        expected = (
            base.per_sample_ms / p.per_sample_ms if speed is None else p.metrics[speed] / base.metrics[speed]
        )  # the baseline's time over this one's
        assert p.speedup == pytest.approx(expected)


def test_a_baseline_timed_on_a_busy_host_never_makes_the_speedups():
    """Issue 32: the study timed its baseline at 120 ms on a busy host (0.13 ms in fact); the end-of-study re-measure
    timed it and the front in fresh processes. Every speedup shown (summary, table, API, report) and the table's
    figures are the fresh processes', and the table says what its interval is."""
    from tuner.api.tune_result import TuneResult
    from tuner.metric import TOP1_METRIC
    from tuner.study.storage import write_remeasure
    from tuner.summary import pareto_table, summarize

    objectives = load_objectives("accuracy_latency")
    study = optuna.create_study(directions=list(objectives.directions))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives.names))
    study.set_user_attr("reference", {"accuracy": 0.95, "validation_images": 400, "num_classes": 10})
    candidate = {
        "placement": "ort-cpu",
        "precision": "fp32",
        "prune_ratio": 0.0,
        "batch_size": 1,
        "fold_bn": False,
        "graph_opt": "all",
        "threads": 1,
    }
    for ms, accuracy in ((120.0, 0.95), (0.05, 0.945)):  # the baseline, then the pick
        m = {
            "accuracy": accuracy,
            "accuracy_drop": 100 * (0.95 - accuracy),
            "per_sample_ms": ms,
            "latency_ms": ms,
            "latency_ci_ms": [ms * 0.99, ms * 1.01],
            "batch_size": 1,
            "executed_precision": "fp32",
            "threads": 1,
        }
        add_measured(study, objectives.values(m), m, candidate, objectives.constraints, baseline=ms == 120.0)
    write_remeasure(
        study,
        {
            "rounds": 3,
            "trials": {
                "0": {"per_sample_ms": 0.13, "median_ms": 0.13, "round_ms": [0.12, 0.13, 0.15], "candidate": candidate},
                "1": {
                    "per_sample_ms": 0.052,
                    "median_ms": 0.052,
                    "round_ms": [0.05, 0.052, 0.055],
                    "candidate": candidate,
                },
            },
        },
    )
    summary = summarize(study, objectives)
    assert [e["speedup"] for e in summary["pareto"] if e["number"] == 1] == [pytest.approx(0.13 / 0.052)]
    result = TuneResult(study, objectives, TOP1_METRIC, studies_dir="unused", storage="unused")
    assert [p.speedup for p in result.pareto if p.trial == 1] == [pytest.approx(0.13 / 0.052)]
    table = pareto_table(summary)
    assert "2400" not in table and "2.5x" in table and "0.052 (0.050-0.055)" in table, table
    assert "ms/sample (range)" in table and "median of the fresh processes" in table
    rows = report_info(study).trials
    assert next(r.speedup for r in rows if r.number == 1) == pytest.approx(0.13 / 0.052)


def test_reasons_are_clipped_between_words_and_the_table_says_what_was_built():
    from tuner.errors import clip, first_line
    from tuner.summary import pareto_table

    reason = "below the 95.59% required, and not promoted to the long one (not faster than the feasible points)"
    assert clip(reason, 80) == "below the 95.59% required, and not promoted to the long one (not faster than…"
    assert first_line(reason, 1000) == reason and len(clip(reason, 80)) <= 80
    entry = {
        "number": 6,
        "params": {
            "placement": "ov-cpu",
            "precision": "fp32",
            "prune_ratio": 0.6,
            "prune_profile": "global",
            "drop_blocks": 3,
            "student": True,
            "sparsity": 0.5,
            "recovery": "long",
            "batch_size": 1,
            "fold_bn": False,
            "graph_opt": "all",
        },
        "metrics": {
            "accuracy": 0.9,
            "per_sample_ms": 0.1,
            "executed_precision": "fp32",
            "threads": 1,
            "latency_ms": 0.1,
            "batch_size": 1,
        },
        "speedup": 3.0,
        "ms": {"per_sample": 0.1, "low": 0.09, "high": 0.11, "source": "one process"},
    }
    table = pareto_table(
        {"pareto": [entry], "reference_accuracy": 0.91, "best_feasible": None, "baseline": {"per_sample_ms": 0.3}}
    )
    assert "student prune 0.60 global -3 blocks sparse 0.50 (long recovery)" in table, table
    assert "within-process CI" in table


def test_load_returns_a_stored_studys_result_with_short_reprs(tmp_path):
    """``tuner.load``: a stored study's TuneResult, nothing built or timed again; short reprs; str is the table."""
    import tuner

    objectives = load_objectives("accuracy_latency")
    url = f"sqlite:///{tmp_path / 'stored.db'}"
    study = optuna.create_study(study_name="stored", storage=url, directions=list(objectives.directions))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives.names))
    study.set_user_attr("reference", {"accuracy": 0.95, "validation_images": 400, "num_classes": 10})
    study.set_user_attr("metric", {"name": "macro_f1", "higher_is_better": True, "code": "abc"})
    study.set_user_attr("constraints", [str(c) for c in objectives.constraints])
    rng = np.random.default_rng(3)
    for i in range(6):
        m = _metrics(rng, 0.95)
        add_measured(
            study,
            objectives.values(m),
            m,
            {
                "placement": "ort-cpu",
                "precision": "fp32",
                "prune_ratio": 0.0,
                "batch_size": m["batch_size"],
                "fold_bn": False,
                "graph_opt": "all",
                "threads": 1,
            },
            objectives.constraints,
            baseline=i == 0,
        )
    before = len(study.trials)
    result = tuner.load("stored", storage=url)
    assert result.objectives.constraints == objectives.constraints and result.metric.name == "macro_f1"
    assert [p.trial for p in result.pareto] == sorted(e["number"] for e in result.summary()["pareto"])
    assert repr(result).startswith("TuneResult(study 'stored', 6 trials, ") and len(repr(result)) < 200
    assert all(repr(p).startswith(f"TrialPoint(#{p.trial} ort-cpu fp32") and len(repr(p)) < 200 for p in result.pareto)
    assert "macro_f1" in str(result) and "top-1" not in str(result)  # the metric by its name
    assert len(optuna.load_study(study_name="stored", storage=url).trials) == before
