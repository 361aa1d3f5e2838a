"""The guardrail figures (tuner.guardrails) on designed logits with known answers, their early stop, and their
place in objectives files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tuner.errors import ConfigError
from tuner.guardrails import ECE_BINS, Predictions, Tally, expected_calibration_error, figures
from tuner.objectives import load_objectives

ROOT = Path(__file__).resolve().parent.parent


def logits_for(predicted: list[int], confidence: float, classes: int = 3) -> np.ndarray:
    """Logits whose top class is ``predicted`` with softmax probability exactly ``confidence`` (the rest shared)."""
    rest = (1 - confidence) / (classes - 1)
    out = np.full((len(predicted), classes), math.log(rest))
    out[np.arange(len(predicted)), predicted] = math.log(confidence)
    return out.astype(np.float32)


LABELS = np.array([0, 0, 1, 1, 2, 2])
BASE = Predictions.of_logits(logits_for([0, 0, 1, 1, 2, 0], 0.9), LABELS)  # 5 of 6 right: classes 1, 1, 0.5


def test_designed_trial_figures_are_exact():
    trial = Predictions.of_logits(logits_for([0, 1, 1, 1, 2, 2], 0.6), LABELS)  # classes 0.5, 1, 1
    f = figures(trial, BASE)
    assert f["worst_class"] == 0
    assert f["worst_class_drop"] == pytest.approx(50.0)  # points: class 0 went from 100% to 50%
    assert f["class_accuracy"] == [0.5, 1.0, 1.0]
    assert f["flip_rate"] == pytest.approx(2 / 6)  # images 1 (0 -> 1) and 5 (0 -> 2)
    assert f["flip_rate_correct"] == pytest.approx(1 / 5)  # of the baseline's 5 right answers, image 1 flipped
    # every confidence 0.9 (one bin): |5/6 - 0.9|; the trial's 0.6 with 5/6 right: |5/6 - 0.6|
    assert BASE.ece == pytest.approx(0.9 - 5 / 6)
    assert f["ece"] == pytest.approx(5 / 6 - 0.6)
    assert f["ece_increase"] == pytest.approx((5 / 6 - 0.6) - (0.9 - 5 / 6))


def test_the_baseline_against_itself_forgets_nothing():
    f = figures(BASE, BASE)
    assert (f["worst_class_drop"], f["flip_rate"], f["flip_rate_correct"], f["ece_increase"]) == (0, 0, 0, 0)


def test_a_class_that_improves_is_no_drop_and_the_worst_may_be_negative():
    better = Predictions.of_logits(logits_for([0, 0, 1, 1, 2, 2], 0.9), LABELS)  # class 2 from 50% to 100%
    f = figures(better, BASE)
    assert f["worst_class_drop"] == pytest.approx(0.0)  # classes 0 and 1 held
    assert f["flip_rate"] == pytest.approx(1 / 6) and f["flip_rate_correct"] == 0.0


def test_ece_over_two_bins_and_the_edges():
    # bin of 0.95: 2 images, 1 right -> |0.5 - 0.95| x 2/4; bin of 0.55: 2 images, 2 right -> |1 - 0.55| x 2/4
    ece = expected_calibration_error(np.array([0.95, 0.95, 0.55, 0.55]), np.array([1, 0, 1, 1]))
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    # confidence 1.0 falls in the last bin, 0.0 in the first; a perfectly calibrated certainty costs nothing
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert expected_calibration_error(np.array([0.0]), np.array([1])) == 1.0
    assert expected_calibration_error(np.zeros(0), np.zeros(0)) == 0.0
    # bins are [k/15, (k+1)/15): 0.5 and 0.52 share bin 7, so their errors cancel in the bin's mean
    assert ECE_BINS == 15
    assert expected_calibration_error(np.array([0.5, 0.52]), np.array([0, 1])) == pytest.approx(0.01)


def test_an_empty_class_has_no_accuracy_and_is_not_the_worst():
    labels = np.array([0, 0, 2, 2])  # class 1 has no validation images
    base = Predictions.of_logits(logits_for([0, 0, 2, 2], 0.9), labels)
    trial = Predictions.of_logits(logits_for([0, 1, 2, 2], 0.9), labels)
    f = figures(trial, base)
    assert f["class_accuracy"] == [0.5, None, 1.0] and f["worst_class"] == 0
    assert f["worst_class_drop"] == pytest.approx(50.0)


def test_figures_refuse_predictions_of_another_split():
    with pytest.raises(ValueError, match="another split"):
        figures(Predictions.of_logits(logits_for([0, 1], 0.9), np.array([0, 1])), BASE)


def test_softmax_confidence_is_stable_for_huge_logits():
    p = Predictions.of_logits(np.array([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0]], dtype=np.float32), np.array([0, 1]))
    assert p.confidence == pytest.approx([1.0, 1 / 3])
    assert np.isfinite(p.ece)


# ---------------------------------------------------------------- the early stop


def batches(logits: np.ndarray, labels: np.ndarray, size: int):
    for i in range(0, len(labels), size):
        yield logits[i : i + size], labels[i : i + size]


def test_tally_collects_the_same_predictions_as_one_pass():
    logits = logits_for([0, 1, 1, 1, 2, 2], 0.6)
    tally = Tally(BASE, {})
    assert all(tally.add(x, y) is None for x, y in batches(logits, LABELS, 4))
    whole = Predictions.of_logits(logits, LABELS)
    got = tally.predictions()
    assert np.array_equal(got.predicted, whole.predicted) and np.allclose(got.confidence, whole.confidence)
    assert figures(got, BASE) == figures(whole, BASE)


def test_flips_stop_a_trial_as_soon_as_the_count_breaks_the_limit():
    base = Predictions.of_logits(logits_for([0] * 10, 0.9, 2), np.zeros(10, dtype=np.int64))
    flips = logits_for([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], 0.9, 2)  # 2 flips in the first batch of 5: 20% of 10
    tally = Tally(base, {"flip_rate": 0.15})
    reason = tally.add(flips[:5], np.zeros(5, dtype=np.int64))
    assert reason and "after 5 of 10" in reason and "flip_rate is at least 0.2" in reason
    # exactly at the limit is within it, however many images are left
    at_limit = Tally(base, {"flip_rate": 0.2, "flip_rate_correct": 0.2})
    assert all(at_limit.add(x, y) is None for x, y in batches(flips, np.zeros(10, dtype=np.int64), 5))


def test_a_class_bound_to_drop_too_far_stops_early_and_ece_never_does():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    base = Predictions.of_logits(logits_for(list(labels), 0.9, 2), labels)  # 100% on both classes
    trial = logits_for([1, 1, 0, 0, 1, 1, 1, 1], 0.9, 2)  # class 0 loses 2 of 4: at least 50 points after 2 images
    tally = Tally(base, {"worst_class_drop": 30.0, "ece": 0.0, "ece_increase": 0.0})
    assert set(tally.limits) == {"worst_class_drop"}  # ECE bounds nothing from a partial count
    assert tally.add(trial[:1], labels[:1]) is None  # 1 of 4 wrong: at most 75%, a 25-point drop so far
    reason = tally.add(trial[1:2], labels[1:2])
    assert reason and "worst_class_drop is at least 50 points" in reason


# ---------------------------------------------------------------- objectives files


def test_the_shipped_guarded_objectives():
    o = load_objectives("guarded")
    assert {str(c) for c in o.constraints} == {
        "accuracy_drop <= 1",
        "worst_class_drop <= 3",
        "flip_rate <= 0.03",
        "ece_increase <= 0.02",
    }
    assert o.guard_limits() == {"worst_class_drop": 3, "flip_rate": 0.03}
    assert [c.words for c in o.constraints if c.metric == "worst_class_drop"] == ["worst_class_drop <= 3 (points)"]
    assert not o.feasible({"accuracy_drop": 0.5, "worst_class_drop": 3.5, "flip_rate": 0.0, "ece_increase": 0.0})
    assert o.feasible({"accuracy_drop": 0.5, "worst_class_drop": 3.0, "flip_rate": 0.03, "ece_increase": -0.1})


def test_a_worst_class_drop_written_as_a_fraction_is_refused_like_accuracy_drop():
    with pytest.raises(ConfigError, match=r"worst_class_drop max 0\.03 is ambiguous"):
        load_objectives({"objectives": {"accuracy": "maximize"}, "constraints": {"worst_class_drop": {"max": 0.03}}})


# ---------------------------------------------------------------- a designed study: front, pick, export's choice


REFERENCE_CLASSES = {"class_accuracy": [1.0, 0.9, 0.95], "ece": 0.05, "classes": ["cat", "dog", "fox"]}


FLIPPED = [[i, i % 3, (i + 1) % 3] for i in range(7, 400, 33)]  # #4's 12 flips (3% of 400): [image, reference, #4]


def _guarded_study(name: str = "guarded", data: str | None = None):
    """Reference top-1 0.95 (classes cat, dog, fox) under objectives ``name``; every trial within 1 point, the
    faster ones each breaking one guardrail of guarded.yaml: #1 flips 8% of the images, #2 drops dog 6 points, #3
    is worse calibrated by 0.05; #4 keeps every bound, at its edge (dog -3 points, 3% flipped: ``FLIPPED``).
    ``data``: the validation images' directory (``_flip_images``), recorded as the study's workload."""
    import warnings

    import optuna

    from tests.recorded import add_measured

    objectives = load_objectives(name)
    study = optuna.create_study(directions=list(objectives.directions), study_name=name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives.names))
    study.set_user_attr(
        "reference", {"accuracy": 0.95, "validation_images": 400, "num_classes": 3, "guardrails": REFERENCE_CLASSES}
    )
    study.set_user_attr("constraints", [str(c) for c in objectives.constraints])
    if data is not None:
        study.set_user_attr("workload", {"data": data, "resolution": None, "seed": 0, "holdout": 0.0})
    held = {
        "worst_class_drop": 0.0,
        "worst_class": 0,
        "flip_rate": 0.0,
        "flip_rate_correct": 0.0,
        "ece": 0.05,
        "ece_increase": 0.0,
        "class_accuracy": REFERENCE_CLASSES["class_accuracy"],
    }
    dog = {"worst_class": 1, "flip_rate_correct": 0.01}
    for i, (acc, ms, broken) in enumerate(
        [
            (0.95, 5.0, {}),
            (0.945, 0.5, {"flip_rate": 0.08}),
            (0.94, 1.0, {"worst_class_drop": 6.0, "class_accuracy": [1.0, 0.84, 0.95], **dog}),
            (0.945, 2.0, {"ece_increase": 0.05}),
            (
                0.945,
                3.0,
                {
                    "flip_rate": 0.03,
                    "worst_class_drop": 3.0,
                    "class_accuracy": [1.0, 0.87, 0.95],
                    "flipped": FLIPPED,
                    **dog,
                },
            ),
        ]
    ):
        m = {
            "accuracy": acc,
            "accuracy_drop": 100 * (0.95 - acc),
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
            **held,
            **broken,
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
    return study, objectives


def test_front_pick_and_exports_choice_honour_every_guardrail():
    from tuner import results
    from tuner.api.tune_result import TuneResult
    from tuner.artifact.select import select_trial
    from tuner.errors import TunerError
    from tuner.metric import TOP1_METRIC
    from tuner.summary import pareto_table, summarize

    study, objectives = _guarded_study()
    assert {r.number for r in results.front(study)} == {0, 4}  # #1-#3 are faster but each breaks a guardrail
    assert results.fastest_feasible(results.points(study)).point.number == 4
    assert select_trial(study, max_drop=1)[0].number == 4
    assert select_trial(study, max_latency_ms=3.0)[0].number == 4
    with pytest.raises(TunerError, match=r"no completed feasible trial of study guarded runs at <= 2\.5"):
        select_trial(study, max_latency_ms=2.5)  # #1-#3 are within it, and infeasible
    result = TuneResult(study, objectives, TOP1_METRIC, studies_dir="unused", storage="unused")
    assert result.best().trial == 4 and result.best(max_latency_ms=4).trial == 4
    frame = result.to_dataframe()
    assert list(frame.sort_values("trial")["flip_rate"]) == [0.0, 0.08, 0.0, 0.0, 0.03]
    assert list(frame.sort_values("trial")["feasible"]) == [True, False, False, False, True]
    table = pareto_table(summarize(study, objectives))
    assert "worst class" in table and "flips" in table
    assert "fastest feasible: trial #4" in table and "worst class +3.00 points, 3.0% of the images" in table, table


def test_the_report_says_what_the_pick_forgot_and_what_a_faster_point_broke(tmp_path):
    from tuner.report.page import render_html
    from tuner.report.writer import report_info

    info = report_info(_guarded_study()[0])
    said = "\n".join(info.findings)
    assert (
        "what the fastest feasible trial, #4, forgot against the reference: its worst class, dog, lost 3.0 "
        "points; 3.0% of the validation images are predicted otherwise than by the reference"
    ) in said, said
    assert "top-1 holds" not in said  # #4 keeps every bound of the study
    assert (
        "the fastest trial that holds top-1 within 1 points but breaks a guardrail (flip_rate <= 0.03, the "
        "study's constraints): #1 ort-cpu"
    ) in said and "6.0x the pick's speed" in said, said
    page = render_html(info)
    assert "What the pick forgot" in page
    rows = page.split('<table class="classes">')[1].split("</table>")[0]
    assert rows.index("<td>dog</td><td>90.0%</td><td>87.0%</td><td>+3.0</td>") < rows.index("<td>cat</td>")


def test_a_study_without_guardrails_is_read_against_guarded_yaml():
    """The same trials under the default objectives: the fastest within 1 point is #1, which flips 8% of the
    images; the report says top-1 held and a guardrail did not, by guarded.yaml's bounds."""
    from tuner.report.writer import report_info

    info = report_info(_guarded_study("accuracy_latency")[0])
    said = "\n".join(info.findings)
    assert (
        "top-1 holds (0.50 points) but a guardrail does not: #1 breaks flip_rate <= 0.03 "
        "(objectives/guarded.yaml's bounds); --objectives guarded makes them constraints."
    ) in said, said


@pytest.mark.slow
def _flip_images(root: Path) -> Path:
    """400 validation images of 3 classes saved as a study's arrays (``tuner.data.save_arrays``), each 8 x 8 px of
    one colour that names it: red = index % 256, green = index // 256, blue = 100 x its class (index % 3)."""
    from tuner.data import save_arrays
    from tuner.dataset import Split

    def split(n: int) -> Split:
        images = np.zeros((n, 3, 8, 8), np.uint8)
        images[:, 0], images[:, 1] = (np.arange(n) % 256)[:, None, None], (np.arange(n) // 256)[:, None, None]
        images[:, 2] = (100 * (np.arange(n) % 3))[:, None, None]
        return Split(images, np.arange(n, dtype=np.int64) % 3)

    root.mkdir()
    save_arrays(root, {"train": split(30), "val": split(400)}, ("cat", "dog", "fox"), "flips")
    return root


def test_the_per_class_view_renders_in_headless_chromium(tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    from tests.test_report import _browser
    from tuner.report.page import render_html
    from tuner.report.writer import report_info

    data = _flip_images(tmp_path / "arrays")
    info = report_info(_guarded_study(data=str(data))[0], studies_dir=tmp_path / "studies")
    assert info.flips_note is None and len(info.flips) == len(FLIPPED)
    page = tmp_path / "guarded.html"
    # once loaded, the page marks how many thumbnails the browser decoded (a broken image has no natural width)
    probe = (
        "<script>addEventListener('load', () => document.body.setAttribute('data-decoded', [...document."
        "querySelectorAll('.flips img')].filter(i => i.complete && i.naturalWidth === 8).length))</script>"
    )
    page.write_text(render_html(info).replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _browser(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0 and "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    table = dom.stdout.split('<table class="classes">')[1].split("</table>")[0]
    assert table.count("<tr>") == 4 and "<td>dog</td>" in table  # the heading and the three classes, drawn
    assert "What the pick forgot" in dom.stdout and 'class="main-svg"' in dom.stdout
    # the pick's flipped images: every one decoded by the browser, each the recorded image with both predictions
    assert f'data-decoded="{len(FLIPPED)}"' in dom.stdout
    figures = re.findall(
        r'<figure class="flip"><img alt="validation image (\d+)"[^>]*src="data:image/png;base64,'
        r'([^"]+)"><figcaption>(.*?)</figcaption>',
        dom.stdout,
    )
    assert [int(i) for i, _, _ in figures] == [i for i, _, _ in FLIPPED]
    names = ("cat", "dog", "fox")
    for (_, png, caption), (i, ref, mine) in zip(figures, FLIPPED):
        pixel = Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB").getpixel((4, 4))
        assert pixel == (i % 256, i // 256, 100 * (i % 3))  # the image itself, not its neighbour
        assert caption == f"#{i} ({names[i % 3]})<br>reference: {names[ref]}<br>#4: {names[mine]}"


def test_thumbnails_that_cannot_be_read_leave_a_note(tmp_path):
    from tuner.report import report_info

    info = report_info(_guarded_study(data=str(tmp_path / "gone"))[0], studies_dir=tmp_path / "studies")
    assert info.flips == [] and info.flips_note and "cannot be shown" in info.flips_note


def test_the_flipped_sample_is_bounded_spread_and_exact():
    labels = np.arange(100) % 4
    base = Predictions(labels, labels.copy(), np.full(100, 0.9), 4)
    few = labels.copy()
    few[[3, 50]] = (labels[[3, 50]] + 1) % 4
    assert figures(Predictions(labels, few, np.full(100, 0.9), 4), base)["flipped"] == [[3, 3, 0], [50, 2, 3]]
    every = (labels + 1) % 4  # all 100 flipped: 12 of them, spread from the first image to the last
    sample = figures(Predictions(labels, every, np.full(100, 0.9), 4), base)["flipped"]
    assert len(sample) == 12 and sample[0][0] == 0 and sample[-1][0] == 99
    assert all(b == labels[i] and t == every[i] for i, b, t in sample)
