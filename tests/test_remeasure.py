"""Re-measuring a real study's Pareto set and baseline in fresh processes, and keeping the result on the study."""

import dataclasses
import shutil
import time
from pathlib import Path

import optuna
import pytest

from tuner import results
from tuner.artifact import select_trial
from tuner.logs import to
from tuner.measure.latency import LatencyPolicy
from tuner.record import read_remeasure, read_trial
from tuner.remeasure.orchestrate import remeasure_pareto
from tuner.remeasure.outcome import RemeasureEntry, RemeasureSummary
from tuner.remeasure.text import format_remeasure
from tuner.report.figures import _hover
from tuner.report.writer import report_info
from tuner.study.storage import write_remeasure

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def test_remeasure_real_study(small_study, tmp_path):
    """On a copy of the session's small study (its builds in the session's cache): re-measuring keeps its record on
    the study, which the report and export tests read as the study left it."""
    studies_dir = Path(small_study["studies_dir"])
    shutil.copyfile(studies_dir / "small.db", tmp_path / "small.db")
    name, storage = small_study["name"], f"sqlite:///{tmp_path}/small.db"
    study = optuna.load_study(study_name=name, storage=storage)
    lines: list[str] = []

    # A shorter timing budget than the study's (3 s) keeps the test quick on a loaded machine. One round asked for,
    # and a budget's end an hour away: the time left buys one more round (as many again, no more).
    with to(lines.append):
        summary = remeasure_pareto(
            study,
            str(studies_dir / "cache"),
            rounds=1,
            policy=LatencyPolicy(max_seconds=1.0),
            deadline=time.monotonic() + 3600,
        )

    pareto = {t.number for t in results.front(study)}
    baseline = next(
        t.number for t in study.trials if t.user_attrs.get("baseline") and t.state == optuna.trial.TrialState.COMPLETE
    )
    assert {e.number for e in summary.entries} == pareto | {baseline}
    assert sum(e.baseline for e in summary.entries) == 1
    for e in summary.entries:
        assert e.error is None, e.error
        # 2 rounds, and once more for each that never found the host quiet
        assert 2 <= len(e.round_ms) <= 4
        # per batch as the study's figure: a fresh process times the same candidate at the same batch within a
        # few times the study's figure (a per-sample figure at batch 8 would be 8x off), unless either was timed on
        # a host crowded by the other tests (a 2-thread model beside another worker's training: 0.2 vs 80 ms), which
        # is then flagged: a figure that far off is never unflagged
        agree = 0.25 < e.median_ms / e.study_ms < 4
        assert agree or not e.study_quiet or e.contended_rounds, (e.number, e.median_ms, e.study_ms)
        assert e.per_sample_ms == pytest.approx(e.median_ms / e.candidate["batch_size"])
        assert isinstance(e.outside_ci, bool) and isinstance(e.within_5pct, bool)
    points = summary.pareto_points
    assert {e.number for e in points} <= pareto and len(points) == len(
        {str(sorted(e.candidate.items())) for e in summary.entries if e.pareto}
    )
    assert summary.fraction_within_5pct == sum(e.within_5pct for e in points) / len(points)
    builds = len({str(sorted(e.candidate.items())) for e in summary.entries})
    assert sum(line.lstrip().startswith("round 1/1 ") for line in lines) == builds
    assert sum(line.lstrip().startswith("extra round 1 ") for line in lines) == builds
    assert summary.rounds == 2

    # Kept on the study (public API), per trial, readable by anyone loading the study.
    again = optuna.load_study(study_name=name, storage=storage)
    stored_all = read_remeasure(again)
    assert set(stored_all) == {e.number for e in summary.entries}
    for e in summary.entries:
        stored = stored_all[e.number]
        assert stored["median_ms"] == pytest.approx(e.median_ms) and stored["rounds"] == 2
        assert stored["within_5pct"] == e.within_5pct and len(stored["round_ms"]) == len(e.round_ms)
    assert again.user_attrs["remeasure"]["fraction_within_5pct"] == summary.fraction_within_5pct

    table = format_remeasure(summary)
    assert all(f"#{e.number}" in table for e in summary.entries) and "within 5%" in table

    # The report shows both figures of each re-timed trial, read back from the storage.
    info = report_info(again)
    for e in summary.entries:
        row = info.row(e.number)
        assert row.remeasured_ms == pytest.approx(e.per_sample_ms)
        assert f"re-measured: {e.per_sample_ms:.4f} ms/sample" in _hover(row, info.reference_accuracy)
    assert all(
        info.row(t.number).remeasured_ms is None
        for t in again.trials
        if t.number not in {e.number for e in summary.entries}
    )
    agree = round(summary.fraction_within_5pct * len(points))
    assert any(
        f.startswith(f"re-timed in fresh processes (2 interleaved rounds): {agree} of {len(points)} Pareto")
        for f in info.findings
    )

    # `export --max-drop` decides among the re-timed points by their re-measured figures.
    picked, why = select_trial(again, max_drop=1)
    timed = {e.number: e for e in summary.entries}
    ok = [
        t
        for t in results.completed(again)
        if t.number in timed and results.is_feasible(t) and t.metrics["accuracy_drop"] <= 1 + 1e-9
    ]
    assert picked.number in timed and "re-measured latency" in why
    assert all(timed[picked.number].per_sample_ms <= timed[t.number].per_sample_ms for t in ok)


def test_remeasure_record_round_trips_through_the_storage(tmp_path):
    """The record is a study user attr (public API): a fresh load reads every entry that holds a figure."""
    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    write_remeasure(
        study,
        {
            "rounds": 3,
            "trials": {"0": {"per_sample_ms": 0.5, "median_ms": 0.5}, "1": {"per_sample_ms": None, "error": "boom"}},
        },
    )
    loaded = read_remeasure(optuna.load_study(study_name="s", storage=url))
    assert loaded == {0: {"per_sample_ms": 0.5, "median_ms": 0.5, "rounds": 3}}  # #1 holds no figure


def test_format_remeasure():
    ok = RemeasureEntry(
        0,
        True,
        False,
        {"placement": "torch-cpu", "precision": "fp32", "batch_size": 1},
        1.0,
        (0.98, 1.02),
        (1.01, 1.03),
        1.02,
        1.01,
        1.03,
        0.02,
        False,
        True,
    )
    off = RemeasureEntry(
        3,
        False,
        True,
        {"placement": "ort-cpu", "precision": "int8", "batch_size": 8},
        4.0,
        (3.9, 4.1),
        (4.8, 5.0),
        4.9,
        4.8,
        5.0,
        0.225,
        True,
        False,
    )
    bad = RemeasureEntry(
        5,
        False,
        True,
        {"placement": "ort-cpu", "precision": "fp32", "batch_size": 1},
        1.0,
        (0.9, 1.1),
        error="MeasurementError: boom",
    )
    table = format_remeasure(RemeasureSummary(2, (ok, off, bad), 0.0, True, 1.0))
    assert "#0 base (not Pareto)" in table and "ort-cpu/int8/8" in table and "0.5000" in table
    assert "0.6125 (0.6000-0.6250)" in table and "+22.5" in table and ">5% off, outside CI" in table
    assert "error: MeasurementError: boom" in table
    assert "0 of 1 Pareto points within 5%" in table  # the baseline off the front is shown, not counted
    noisy = dataclasses.replace(
        ok, number=7, baseline=False, pareto=True, contended_rounds=1, candidate={**ok.candidate, "threads": 1}
    )
    again = dataclasses.replace(off, number=9)  # a duplicate trial of #3: the same point, counted once
    summary = RemeasureSummary(2, (ok, off, noisy, again), 0.5, True, 1.0)
    assert [e.number for e in summary.measured] == [0, 3, 7] and [e.number for e in summary.pareto_points] == [3, 7]
    table = format_remeasure(summary)
    assert "1 of 2 Pareto points" in table and "1 contended rounds" in table
    assert "1 of 2 timed on a quiet host (the study and the rounds used), 0 of them within 5%" in table


def test_a_failing_measurement_is_one_error_line():
    from tuner.candidate import Candidate
    from tuner.errors import MeasurementError
    from tuner.remeasure.runner import measure_in_fresh_process
    from tuner.workload_spec import WorkloadSpec

    spec = WorkloadSpec(model="no_such_model_xyz", data="digits", resolution=16, cache_dir=None)
    with pytest.raises(MeasurementError, match="ModelError"):
        measure_in_fresh_process(spec, Candidate().to_dict(), LatencyPolicy(), timeout=300)


def test_a_contended_round_does_not_make_the_figure():
    """Rounds whose process never found the host quiet are left out where quiet rounds exist."""
    from tuner.remeasure.outcome import entry_from_rounds

    t = optuna.trial.create_trial(
        values=[0.9, 1.0],
        user_attrs={
            "candidate": {"placement": "ort-cpu", "batch_size": 1},
            "metrics": {"latency_ms": 1.0, "latency_ci_ms": [0.98, 1.02], "latency_quiet": True},
        },
    )
    t = read_trial(t)
    e = entry_from_rounds(t, True, [1.5, 1.0, 1.04], [True, False, False], None)
    assert e.median_ms == pytest.approx(1.02) and e.rounds_used == 2 and e.contended_rounds == 0
    assert e.max_ms == 1.04 and e.within_5pct and e.round_ms == (1.5, 1.0, 1.04)
    busy = entry_from_rounds(t, True, [1.5, 1.3, 1.4], [True, True, True], None)  # none quiet: all of them, and said so
    assert busy.median_ms == pytest.approx(1.4) and busy.contended_rounds == 3 and not busy.within_5pct
