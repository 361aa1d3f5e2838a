"""The report's accuracy axis labels every tick distinctly, however close the accuracies are: checked on the figure
(explicit ticks) and, where chromium is installed, on the page a real browser draws."""

import re
import warnings

import optuna
import pytest

from tests.recorded import add_measured
from tests.test_report import _browser
from tuner.objectives import Constraint
from tuner.report.figures import pareto_figure
from tuner.report.writer import report_info, write_report


def _study(accuracies: list[float]) -> optuna.Study:
    """An in-memory study recorded as tuner records one, every metric the report shows present."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "per_sample_ms"])
    study.set_user_attr("reference", {"accuracy": accuracies[0], "validation_images": 2000})
    for i, acc in enumerate(accuracies):
        ms = 1.0 / (i + 1)
        metrics = {
            "accuracy": acc,
            "accuracy_drop": 100 * (accuracies[0] - acc),
            "per_sample_ms": ms,
            "latency_ms": ms,
            "latency_p95_ms": 1.1 * ms,
            "latency_ci_ms": [0.98 * ms, 1.02 * ms],
            "throughput": 1000 / ms,
            "samples": 100,
            "size_mb": 1.0,
            "params": 1000,
            "macs": 10_000,
            "executed_precision": "fp32",
            "threads": 1,
            "batch_size": 1,
        }
        candidate = {
            "placement": "ort-cpu",
            "precision": "fp32",
            "prune_ratio": 0.0,
            "batch_size": 1,
            "fold_bn": False,
            "graph_opt": "all",
            "threads": 1,
        }
        add_measured(study, [acc, ms], metrics, candidate, [Constraint("accuracy_drop", max=1)], baseline=i == 0)
    return study


# within 0.2 points (the 98.8-98.9%), within 0.03 points, about 2 points, one value
CLOSE = [[0.9885, 0.9880, 0.9891, 0.9896, 0.9887], [0.98861, 0.98875, 0.98889], [0.9700, 0.9912, 0.9805], [0.99, 0.99]]


@pytest.mark.parametrize("accuracies", CLOSE)
def test_accuracy_ticks_are_distinct_and_cover_the_points(accuracies):
    axis = pareto_figure(report_info(_study(accuracies))).layout.yaxis
    ticks, labels = list(axis.tickvals), list(axis.ticktext)
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert min(ticks) <= min(accuracies) and max(ticks) >= max(accuracies)
    assert all(label.endswith("%") for label in labels)


@pytest.mark.parametrize("accuracies", [CLOSE[0], CLOSE[3]])
def test_the_browser_draws_distinct_accuracy_ticks(tmp_path, accuracies):
    """What plotly.js really draws for accuracies within 0.2 points, and for one accuracy: every y tick of the
    front a distinct label with two decimals, around the points (plotly's own range for one value spans 0-150%)."""
    page = tmp_path / "report.html"
    write_report(_study(accuracies), page)
    dom = _browser(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    front = dom.stdout.split('class="plot-container plotly"')[1]  # the Pareto figure, drawn first
    labels = re.findall(r'class="ytick"[^>]*>\s*<text[^>]*>([^<]*)</text>', front)
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert all(re.fullmatch(r"9[89]\.\d\d%", label) for label in labels), labels
    shown = [float(label[:-1]) / 100 for label in labels]
    assert min(shown) <= min(accuracies) and max(shown) >= max(accuracies)
