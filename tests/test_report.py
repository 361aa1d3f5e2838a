"""The study report: its data (Pareto front, baseline, hypervolume, findings) from a real study, the CSV,
and the HTML page rendered by a real headless browser."""

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.conftest import run_tuner
from tuner.report.compression import compression_findings
from tuner.report.data import ReportInfo, TrialRow
from tuner.report.findings import findings
from tuner.report.page import table_rows
from tuner.report.writer import report_info

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


@pytest.fixture(scope="module")
def study(small_study):
    return optuna.load_study(study_name=small_study["name"], storage=small_study["storage"])


@pytest.fixture(scope="module")
def report_files(small_study, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = run_tuner(
        "report",
        "--study",
        small_study["name"],
        "--studies-dir",
        small_study["studies_dir"],
        "--out",
        str(out / "report.html"),
        "--csv",
        str(out / "trials.csv"),
    )
    assert r.returncode == 0, r.stderr
    return out / "report.html", out / "trials.csv", r.stdout


def _dominates(a: TrialRow, b: TrialRow) -> bool:
    """On the small study's objectives (accuracy up, per-sample latency down): a is no worse on both, better on one."""
    return a.accuracy >= b.accuracy and a.ms <= b.ms and (a.accuracy > b.accuracy or a.ms < b.ms)


def test_report_info_from_study(study):
    info = report_info(study)
    assert [r.number for r in info.trials] == [t.number for t in study.trials]
    assert info.baseline == 0 and info.row(0).baseline and info.reference_accuracy > 0.5
    # The front is the Pareto set by its definition: the feasible measured candidates (a repeat carries its
    # original's figures) that no other feasible one beats on one objective without losing on the other.
    measured = [r for r in info.completed if r.feasible and r.duplicate_of is None]
    assert set(info.pareto) == {r.number for r in measured if not any(_dominates(o, r) for o in measured)}
    front = [info.row(n) for n in info.pareto]
    assert all(r.feasible and r.pareto for r in front)
    # drawn left to right: faster first, and so (undominated) never more accurate than a slower front point
    assert [r.ms for r in front] == sorted(r.ms for r in front)
    assert [r.accuracy for r in front] == sorted(r.accuracy for r in front)
    assert len(info.hypervolume) == len(info.completed)
    values = [v for _, v in info.hypervolume]
    assert values == sorted(values) and values[-1] > 0

    # The first finding names the fastest feasible trial: feasible, no feasible trial faster, none as fast
    # and more accurate.
    named = re.match(r"the fastest feasible trial(?:,| is) #(\d+) ", info.findings[0])
    assert named, info.findings[0]
    best = info.row(int(named[1]))
    feasible = [r for r in info.completed if r.feasible]
    assert best.feasible and not any(_dominates(r, best) or r.ms < best.ms for r in feasible)

    # Both placements completed (see conftest): one finding compares them at the accuracy both reach, the
    # faster side first, each side by its fastest trial among those at least as accurate.
    (line,) = [f for f in info.findings if "at the accuracy both reach" in f]
    quoted = re.match(r"(\S+) (?:beat|and) (\S+) .*?: #(\d+) \S+ ms/sample at \S+ vs #(\d+) ", line)
    assert quoted, line
    a, b = info.row(int(quoted[3])), info.row(int(quoted[4]))
    assert {quoted[1], quoted[2]} == {"torch-cpu", "ort-cpu"}
    assert (a.params["placement"], b.params["placement"]) == (quoted[1], quoted[2]) and a.ms <= b.ms
    for side in (a, b):
        assert not [
            r.number
            for r in info.completed
            if r.params["placement"] == side.params["placement"] and r.accuracy >= side.accuracy and r.ms < side.ms
        ]

    # Accuracy varies (pruned and unpruned trials, see conftest) and latency always does: fANOVA explains both,
    # and a 0.5 prune (about 6 points) moves accuracy far more than anything else in this space.
    assert set(info.importances) == {"accuracy", "per_sample_ms"} and not info.importance_notes
    for imp in info.importances.values():
        assert abs(sum(imp.values()) - 1) < 1e-6 and all(v >= 0 for v in imp.values())
    accuracy = info.importances["accuracy"]
    assert max(accuracy, key=accuracy.get) == "prune_ratio", accuracy


def test_report_cli_writes_html_and_csv(study, report_files):
    html_path, csv_path, stdout = report_files
    info = report_info(study)
    page = html_path.read_text()
    assert "Plotly.newPlot" in page and not re.search(r"<script[^>]+src=", page)  # plotly.js inline: works offline
    assert f"Study {study.study_name}" in page and 'id="trials"' in page
    for f in info.findings:
        assert html.escape(f) in page
    assert "prune_ratio: " in page and "per sample: " in page and "95% CI" in page  # the hover texts
    trials = pd.read_csv(csv_path)
    assert list(trials["trial"]) == [t.number for t in study.trials]
    assert set(trials.loc[trials["pareto"], "trial"]) == set(info.pareto)
    assert {
        "placement",
        "precision",
        "accuracy",
        "per_sample_ms",
        "latency_ci_low_ms",
        "latency_ci_high_ms",
        "latency_ms",
        "remeasured_per_sample_ms",
        "speedup",
        "note",
    } <= set(trials)  # TuneResult.to_dataframe()'s
    assert trials.loc[trials["trial"] == 0, "baseline"].item()
    assert "report: " in stdout


def test_report_of_missing_study_is_one_line(tmp_path):
    r = run_tuner("report", "--study", "nothing-here", "--studies-dir", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "no study 'nothing-here'" in r.stderr
    assert not list(tmp_path.iterdir())  # no empty database created


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _browser(tmp_path: Path, page: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--window-size=1400,3200",
            *mode,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_renders_in_headless_chromium(study, report_files, tmp_path):
    html_path = report_files[0]
    dom = _browser(tmp_path, html_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    completed = len(report_info(study).completed)
    # plotly drew every completed trial as a point (plus the front's rings and the baseline star)
    assert dom.stdout.count('class="point"') >= completed + 1
    assert 'class="main-svg"' in dom.stdout and "hypervolume" in dom.stdout.lower()
    shot = tmp_path / "report.png"
    png = _browser(tmp_path, html_path, f"--screenshot={shot}")
    assert png.returncode == 0 and "Uncaught" not in png.stderr
    assert shot.stat().st_size > 50_000  # a drawn page, not a blank one


# ---------------------------------------------------------------- the findings rules on a designed table


def _row(n, placement, precision, prune, bs, acc, ms, baseline=False):
    lat = ms * bs
    return TrialRow(
        number=n,
        state="complete",
        params={
            "placement": placement,
            "precision": precision,
            "prune_ratio": prune,
            "batch_size": bs,
            "fold_bn": False,
            "graph_opt": "all",
            "threads": 1,
        },
        metrics={
            "accuracy": acc,
            "per_sample_ms": ms,
            "latency_ms": lat,
            "latency_ci_ms": [lat * 0.98, lat * 1.02],
            "executed_precision": precision,
            "accuracy_drop": 100 * (0.95 - acc),
        },
        feasible=0.95 - acc <= 0.01,
        pareto=False,
        baseline=baseline,
        speedup=None,
        duplicate_of=None,
        note="",
    )


def test_findings_state_what_the_table_shows():
    rows = [
        _row(0, "torch-cpu", "fp32", 0.0, 1, 0.95, 7.0, baseline=True),
        _row(1, "ort-cpu", "fp32", 0.0, 32, 0.95, 1.0),
        _row(2, "ort-cpu", "int8", 0.0, 32, 0.945, 1.5),
        _row(3, "ort-cpu", "fp32", 0.1, 32, 0.95, 1.0),
        _row(4, "ort-cpu", "fp32", 0.2, 32, 0.95, 1.01),
        _row(5, "ort-cpu", "fp32", 0.5, 32, 0.93, 0.6),
        _row(6, "ort-cpu", "fp32", 0.0, 1, 0.95, 2.0),
    ]
    info = ReportInfo(
        study="designed",
        objectives={},
        reference_accuracy=0.95,
        validation_images=400,
        hardware={},
        workload={},
        trials=rows,
        pareto=[],
        baseline=0,
        hypervolume=[],
        hypervolume_reference=None,
        importances={},
        importance_notes=[],
        findings=[],
    )
    text = "\n".join(findings(info))
    assert "int8 on ort-cpu was slower than fp32 at batch 32 (1.5x" in text
    assert "pruning below 0.50 bought no latency (ratios 0.10, 0.20" in text
    assert "pruning 0.50 cut per-sample latency 1.7x and cost 2.0 points of accuracy" in text
    assert "ort-cpu beat torch-cpu by 7.0x at the accuracy both reach" in text
    assert "batch 32 cut per-sample latency 2.0x vs batch 1 on ort-cpu fp32" in text
    assert "the fastest feasible trial, #1 ort-cpu fp32" in text and "7.0x faster than the baseline" in text
    assert "1 of 7 completed trials broke a constraint (#5)" in text
    # nothing claimed that the table does not show
    assert "fp16" not in text and "bf16" not in text and "torch-cuda" not in text


def test_findings_on_compression():
    """Each compression setting against its absence in matched trials, and the recovery that was too short."""

    def row(n, acc, ms, **params):
        r = _row(n, "ov-cpu", "int8", params.pop("prune", 0.4), 1, acc, ms)
        r.params.update({"prune_profile": "uniform", "drop_blocks": 0, "sparsity": 0.0, **params})
        r.metrics.update(
            {
                "macs": 1000 if r.params["prune_profile"] == "uniform" else 800,
                "compressed_mb": 2.0,
                "dropped_blocks": ["layer4.1"] if r.params["drop_blocks"] else [],
            }
        )
        return r

    sparse = row(4, 0.93, 1.01, sparsity=0.7)
    sparse.metrics["compressed_mb"] = 0.5
    long = row(5, 0.945, 0.8, drop_blocks=1)
    long = TrialRow(**{**long.__dict__, "short_recovery": {"accuracy": 0.92, "per_sample_ms": 0.8, "recovery": {}}})
    long.metrics["recovery"] = {"stopped": "budget", "before": 100, "steps": 300, "kept": 400, "fidelity": "long"}
    rows = [row(1, 0.94, 1.0), row(2, 0.95, 0.9, prune_profile="global"), row(3, 0.94, 1.2, prune=0.0), sparse, long]
    text = "\n".join(compression_findings(rows))
    assert (
        "the global ratio profile ran at 1.11x the speed of uniform at the same ratio, with 0.80x its MACs, and "
        "kept 1.0 points more accuracy (1 matched group)"
    ) in text
    assert "dropping 1 block (layer4.1) cut per-sample latency 1.2x and cost no accuracy" in text
    assert (
        "sparsity 0.70 ran at 0.99x the dense speed (CIs overlap: no runtime here turned the zeros into speed); "
        "its zipped artifact is 4.0x smaller (0.50 vs 2.00 MB); cost 1.0 points of accuracy"
    ) in text
    assert (
        "1 candidate missed the accuracy floor after the short recovery by little" in text
        and "92.00% -> 94.50%" in text
    )
    assert (
        "still improving when 1 recovery ran out of steps (prune 0.40 uniform, -1 blocks, sparsity 0, long (300 steps))"
    ) in text
    assert "prune 0.00" not in text  # the unpruned row has no profile to compare


def test_findings_on_mixed_precision():
    """Each fallback to float against uniform int8 of the same build: what it bought and what it cost."""

    def row(n, acc, ms, ops="all", k=0, ran="int8 12"):
        r = _row(n, "ov-cpu", "int8", 0.0, 1, acc, ms)
        r.params.update({"calibration": "minmax", "int8_ops": ops, "float_layers": k})
        r.metrics.update({"float_layers": [f"conv{i}" for i in range(k)], "layer_precisions": ran})
        return r

    rows = [
        row(1, 0.93, 1.0),
        row(2, 0.945, 1.3, k=2, ran="int8 10 / bf16 2"),
        row(3, 0.95, 0.7, ops="compute"),
        _row(4, "ort-cpu", "int8", 0.0, 1, 0.9, 1.0),
    ]  # no fallback beside it: nothing to say
    text = "\n".join(
        findings(
            ReportInfo(
                study="designed",
                objectives={},
                reference_accuracy=0.95,
                validation_images=400,
                hardware={},
                workload={},
                trials=rows,
                pareto=[],
                baseline=None,
                hypervolume=[],
                hypervolume_reference=None,
                importances={},
                importance_notes=[],
                findings=[],
            )
        )
    )
    assert (
        "keeping 2 layers in float (conv0, conv1) on ov-cpu, batch 1 recovered 1.5 points over uniform int8, at "
        "1.3x slower (#2 1.300 vs #1 1.000 ms/sample; ran int8 10 / bf16 2)"
    ) in text
    assert (
        "quantizing only the Conv / Gemm / MatMul inputs on ov-cpu, batch 1 recovered 2.0 points over uniform "
        "int8, at 1.4x faster"
    ) in text
    assert "ort-cpu, batch 1" not in text


def test_findings_report_the_remeasure():
    """Both figures of each re-timed Pareto point, the agreement, and a pick the re-measure reorders."""

    def again(row, ms, within, outside):
        bs = row.params["batch_size"]
        rel = (ms - row.ms) / row.ms
        return TrialRow(
            **{
                **row.__dict__,
                "pareto": True,
                "remeasure": {
                    "per_sample_ms": ms,
                    "median_ms": ms * bs,
                    "min_ms": ms * bs * 0.99,
                    "max_ms": ms * bs * 1.01,
                    "rel_diff": rel,
                    "within_5pct": within,
                    "outside_ci": outside,
                    "rounds": 3,
                    "rounds_used": 3,
                },
            }
        )

    base = _row(0, "torch-cpu", "fp32", 0.0, 1, 0.95, 7.0, baseline=True)
    fast = again(_row(1, "ort-cpu", "int8", 0.0, 1, 0.948, 1.00), 1.20, False, True)  # 20% slower when re-timed
    next_ = again(_row(2, "ort-cpu", "fp32", 0.0, 1, 0.95, 1.10), 1.11, True, False)
    info = ReportInfo(
        study="designed",
        objectives={},
        reference_accuracy=0.95,
        validation_images=400,
        hardware={},
        workload={},
        trials=[base, fast, next_],
        pareto=[1, 2],
        baseline=0,
        hypervolume=[],
        hypervolume_reference=None,
        importances={},
        importance_notes=[],
        findings=[],
    )
    text = "\n".join(findings(info))
    assert (
        "re-timed in fresh processes (3 interleaved rounds): 1 of 2 Pareto points within 5% of the study's "
        "figure (#1 +20.0%, #2 +0.9%); 1 outside the study's within-process 95% CI"
    ) in text
    assert (
        "the fastest feasible point is #2 (1.1100 ms/sample), not #1 (1.2000 re-measured, 1.0000 in the study)" in text
    )
    rows = {r["trial"]: r for r in table_rows(info)}
    assert rows[1]["re-measured ms/sample"] == 1.20 and round(rows[1]["re-measure diff %"], 6) == 20.0
    assert "re-measure >5% off" in rows[1]["flags"] and "re-measure" not in rows[2]["flags"]
    assert rows[0]["re-measured ms/sample"] is None


def test_hypervolume_of_a_known_front():
    """Three staircase points under the reference (1, 1): 0.6*0.2 + 0.4*0.3 + 0.2*0.3 by hand; dominated and
    out-of-reference points add nothing."""
    from tuner.report.data import hypervolume

    front = [(0.4, 0.8), (0.6, 0.5), (0.8, 0.2)]
    assert hypervolume(front, (1.0, 1.0)) == pytest.approx(0.6 * 0.2 + 0.4 * 0.3 + 0.2 * 0.3)
    assert hypervolume([*front, (0.7, 0.9), (1.2, 0.1)], (1.0, 1.0)) == pytest.approx(0.3)
    assert hypervolume([], (1.0, 1.0)) == 0.0


def test_per_sample_ci_is_the_batch_ci_over_the_batch():
    """Known answers: _row records a per-batch CI of -2%/+2% around ms * batch, so per sample it is
    (0.98 ms, 1.02 ms) at every batch size."""
    for bs in (1, 8, 32):
        assert _row(1, "ort-cpu", "fp32", 0.0, bs, 0.95, 0.5).ms_ci == pytest.approx((0.49, 0.51))
    row = _row(2, "ort-cpu", "fp32", 0.0, 8, 0.95, 0.5)
    # a candidate that does not record its batch: the measurement's own batch_size
    no_batch = TrialRow(
        **{
            **row.__dict__,
            "params": {k: v for k, v in row.params.items() if k != "batch_size"},
            "metrics": {**row.metrics, "batch_size": 8},
        }
    )
    assert no_batch.ms_ci == pytest.approx((0.49, 0.51))
    # no recorded CI (an older study): the median itself at both ends
    no_ci = TrialRow(**{**row.__dict__, "metrics": {k: v for k, v in row.metrics.items() if k != "latency_ci_ms"}})
    assert no_ci.ms_ci == pytest.approx((0.5, 0.5))


def _designed_study(trials: list[tuple[dict, float, float]]) -> optuna.Study:
    """An in-memory study recorded as tuner records one: (candidate fields, accuracy, ms/sample) per trial."""
    import warnings

    study = optuna.create_study(directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "per_sample_ms"])
    study.set_user_attr("reference", {"accuracy": 0.95, "validation_images": 400})
    for i, (fields, acc, ms) in enumerate(trials):
        row = _row(i, "ort-cpu", "fp32", 0.0, 1, acc, ms, baseline=i == 0)
        params = {**row.params, **fields}
        metrics = {
            **row.metrics,
            "latency_ms": ms * params["batch_size"],
            "latency_ci_ms": [0.98 * ms * params["batch_size"], 1.02 * ms * params["batch_size"]],
        }
        study.add_trial(
            optuna.trial.create_trial(
                values=[acc, ms], user_attrs={"metrics": metrics, "candidate": params, "baseline": i == 0}
            )
        )
    return study


def test_importances_name_the_field_that_drives_each_objective():
    """Known answers on a designed 2x2x2 grid: latency follows the batch size, accuracy the prune ratio;
    fold_bn moves each by a hair."""
    grid = [
        (
            {"batch_size": bs, "prune_ratio": q, "fold_bn": f},
            (0.95 if q == 0 else 0.90) + 0.001 * f,
            (1.0 if bs == 1 else 0.3) + 0.01 * f,
        )
        for bs in (1, 8)
        for q in (0.0, 0.5)
        for f in (False, True)
    ]
    info = report_info(_designed_study(grid))
    assert set(info.importances) == {"accuracy", "per_sample_ms"} and not info.importance_notes
    assert set(info.importances["accuracy"]) == {"batch_size", "prune_ratio", "fold_bn"}
    assert info.importances["per_sample_ms"]["batch_size"] > 0.9
    assert info.importances["accuracy"]["prune_ratio"] > 0.9

    # accuracy the same everywhere: nothing to explain there, said so; latency still explained
    flat = report_info(_designed_study([(fields, 0.95, ms) for fields, _, ms in grid]))
    assert set(flat.importances) == {"per_sample_ms"}
    assert len(flat.importance_notes) == 1 and flat.importance_notes[0].startswith("no importances for accuracy: ")

    # three distinct trials are too few
    few = report_info(_designed_study(grid[:3]))
    assert few.importances == {}
    assert few.importance_notes == ["no parameter importances: 3 distinct completed trials are too few (4 needed)"]


def test_the_pareto_tables_precision_cell_names_the_int8_settings_and_what_ran():
    from tuner.summary import precision_cell

    assert (
        precision_cell({"precision": "int8", "int8_ops": "compute", "float_layers": 2}, {"executed_precision": "mixed"})
        == "int8 (compute ops, 2 float; ran mixed)"
    )
    assert (
        precision_cell(
            {"precision": "int8", "calibration": "entropy", "calibration_images": 64}, {"executed_precision": "int8"}
        )
        == "int8 (entropy, calibrated on 64)"
    )
    assert (
        precision_cell({"precision": "int8", "int8_ops": "all", "float_layers": 0}, {"executed_precision": "int8"})
        == "int8"
    )
    assert precision_cell({"precision": "fp32"}, {"executed_precision": "bf16"}) == "fp32 (ran bf16)"


def test_the_layer_view_renders_in_headless_chromium(small_study, tmp_path):
    """`tuner explain` keeps its comparison on the study; the report drawn after it shows the costliest layers of the
    pick and the baseline, bar by bar (before it, a note says how to get them)."""
    from tuner.explain.trials import explain_study
    from tuner.record import EXPLAIN_ATTR
    from tuner.report.layer_figure import LAYER_VIEW_ROWS
    from tuner.report.page import render_html
    from tuner.report.writer import write_report

    storage = f"sqlite:///{tmp_path / 'copy.db'}"  # a copy: the shared small study stays as the other tests read it
    optuna.copy_study(
        from_study_name=small_study["name"],
        from_storage=small_study["storage"],
        to_storage=storage,
        to_study_name="layers",
    )
    study = optuna.load_study(study_name="layers", storage=storage)
    study.set_user_attr(EXPLAIN_ATTR, None)  # tests/test_explain.py may have explained the shared study already
    assert report_info(study).layers is None and "Not profiled yet: `tuner explain" in render_html(report_info(study))
    done = explain_study(study, studies_dir=small_study["studies_dir"], repeats=3)
    info = report_info(optuna.load_study(study_name="layers", storage=storage))
    assert (info.layers["trial"], info.layers["against"]) == (done.trial, done.against) and done.against is not None
    assert [r["module"] for r in info.layers["rows"]] == [r.module for r in done.rows]
    page = tmp_path / "report.html"
    write_report(study, page)
    dom = _browser(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0 and "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    view = dom.stdout.split('id="figure-layer-by-layer"')[1].split('id="figure-hypervolume-history"')[0]
    drawn = [r for r in done.rows if r.ms or r.against_ms][:LAYER_VIEW_ROWS]
    assert all(f">{r.module}<" in view for r in drawn), [r.module for r in drawn]
    assert view.count('class="point"') >= len(drawn)  # one bar per layer and build (a layer gone draws none)
