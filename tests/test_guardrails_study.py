"""Guardrails in real studies: what every trial records against the reference (tuner.guardrails), a study under
objectives/guarded.yaml whose front and pick honour every bound, and a real measurement stopped early by flips."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from tests.conftest import SMALL_SPACE, TINY
from tuner import results
from tuner.guardrails import GUARD_METRICS, Predictions
from tuner.objectives import load_objectives
from tuner.record import read_study

pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
    pytest.mark.slow,
]  # end to end: studies and processes (pytest -m "not slow" skips)


def test_every_trial_records_its_guardrails_against_the_reference(small_study):
    study = optuna.load_study(study_name=small_study["name"], storage=small_study["storage"])
    reference = read_study(study).reference
    classes = np.array([np.nan if a is None else a for a in reference["guardrails"]["class_accuracy"]])
    assert len(classes) == reference["num_classes"] == 10 and 0 <= reference["guardrails"]["ece"] <= 1
    done = results.completed(study)
    assert len(done) >= 3
    for r in done:
        m = r.metrics
        assert set(GUARD_METRICS) <= set(m), r.number
        mine = np.array([np.nan if a is None else a for a in m["class_accuracy"]])
        assert m["worst_class_drop"] == pytest.approx(np.nanmax(100 * (classes - mine)), abs=1e-3)  # rounded lists
        assert 0 <= m["flip_rate"] <= 1 and 0 <= m["flip_rate_correct"] <= 1
        assert m["ece_increase"] == pytest.approx(m["ece"] - reference["guardrails"]["ece"])
        if r.baseline:  # the unchanged model in fp32 at batch 1: the reference's answers, image by image
            assert m["flip_rate"] == 0 and m["worst_class_drop"] == pytest.approx(0, abs=1e-9)


def test_a_guarded_study_honours_every_bound_on_digits(studies_dir):
    """objectives/guarded.yaml as shipped, on the tiny CNN: whatever each trial measured, the front, the pick and
    the recorded constraints agree with the bounds applied to its figures."""
    import tuner

    objectives = load_objectives("guarded")
    said: list[str] = []
    result = tuner.tune(
        f"{TINY}:conv_net",
        "digits",
        resolution=16,
        train_steps=80,
        recover_steps=20,
        space=SMALL_SPACE,
        objectives="guarded",
        n_trials=5,
        studies_dir=str(studies_dir),
        study="guarded",
        remeasure_rounds=0,
        seed=3,
        progress=False,
        log=said.append,
    )
    told = next(line for line in said if line.startswith("objectives: "))
    assert "worst_class_drop <= 3 (points)" in told and told.endswith(
        "; no early stop on ece_increase (a partial count bounds nothing)"
    ), told
    done = results.completed(result.study)
    assert len(done) >= 2 and all(set(GUARD_METRICS) <= set(r.metrics) for r in done)
    for r in done:
        assert results.is_feasible(r) == objectives.feasible(r.metrics), r.number
        assert set(r.constraints) == {str(c) for c in objectives.constraints}
    assert all(p.feasible and objectives.feasible(p.metrics) for p in result.pareto)
    best = result.best()
    assert objectives.feasible(best.metrics)
    frame = result.to_dataframe()
    assert {"worst_class_drop", "flip_rate", "ece_increase"} <= set(frame.columns)
    assert "worst class" in str(result) and "flips" in str(result)


def test_a_real_measurement_bound_to_flip_too_many_stops_early(workload):
    """The tiny CNN measured against a designed baseline that answered every image with another class than the
    model does: the first batch already flips more than the 5% allowed, and the rest is never run."""
    from tuner.candidate import Candidate
    from tuner.errors import HopelessCandidate
    from tuner.measure import measure
    from tuner.passes.chain import build

    built = build(workload, Candidate(placement="torch-cpu", precision="fp32", batch_size=32, threads=1))
    honest = measure(built, workload.data, baseline=_baseline(built, workload, shift=0))
    assert honest.to_dict()["flip_rate"] == 0 and honest.to_dict()["worst_class_drop"] == pytest.approx(0)
    other = _baseline(built, workload, shift=1)
    with pytest.raises(
        HopelessCandidate,
        match=rf"stopped after 32 of {len(workload.data.val)} validation images: "
        r"flip_rate is at least",
    ):
        measure(built, workload.data, baseline=other, limits={"flip_rate": 0.05})  # 32 of 579 images: 5.5%
    # ECE bounds nothing from a partial count: the same limit on it measures the whole split
    whole = measure(built, workload.data, baseline=other, limits={"ece_increase": 0.0}).to_dict()
    assert whole["flip_rate"] == 1.0


def _baseline(built, workload, shift: int) -> Predictions:
    """The model's own validation predictions, each moved ``shift`` classes on."""
    from tuner.measure import open_session

    session = open_session(built)
    try:
        logits = np.concatenate([session.predict(x) for x, _ in workload.data.batches(workload.data.val, 64)])
    finally:
        session.close()
    return Predictions.of_logits(np.roll(logits, shift, axis=1), workload.data.val.labels)
