"""Any model on the default space: what a model cannot take is narrowed at start and listed; a refusal that only
the build can see costs its trial, never the study."""

from __future__ import annotations

import optuna
import pytest
import yaml

from tests.conftest import PLAIN_TRIALS, TINY, run_tuner
from tuner.candidate import Candidate
from tuner.space import load_space

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def test_capped_narrows_a_range_and_choices_and_lists_why(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {"placement": "ort-cpu", "drop_blocks": {"low": 0, "high": 3}, "batch_size": {"choices": [1, 8, 32]}}
        )
    )
    s = load_space(str(space))
    two = s.capped("drop_blocks", 2, "two blocks")
    assert two.values("drop_blocks") == (0, 2) and "drop_blocks above 2: two blocks; kept at 0-2" in two.dropped
    none = s.capped("drop_blocks", 0, "no blocks")
    assert none.values("drop_blocks") == (0,) and none.params_of(Candidate(placement="ort-cpu", drop_blocks=1)) is None
    assert s.capped("batch_size", 8, "memory").values("batch_size") == (1, 8)
    assert s.capped("drop_blocks", 5, "plenty") is s  # nothing above the cap: the same space, nothing listed


def test_a_plain_cnn_completes_the_default_space_with_what_it_cannot_take_listed(plain_cnn_study):
    """The default space drops up to 3 blocks; a plain CNN has none: the range is capped to 0 at start (listed),
    and the study completes its PLAIN_TRIALS (12) trials (before: a traceback at the first drop_blocks > 0, and on
    resume): the baseline, the int8 anchors and the sampler's proposals, each of which would draw drop_blocks 1-3
    three times in four were the range not capped."""
    r = plain_cnn_study
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dropped drop_blocks above 0: the model has 0 droppable blocks" in r.stderr
    assert "Traceback" not in r.stderr
    study = optuna.load_study(study_name="plain-cnn", storage=r.storage)
    finished = [
        t
        for t in study.trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        and "duplicate_of" not in t.user_attrs
    ]
    assert len(finished) == PLAIN_TRIALS
    assert all(t.user_attrs["candidate"]["drop_blocks"] == 0 for t in study.trials if "candidate" in t.user_attrs)


def test_a_refusal_inside_a_trial_is_a_refused_trial(tmp_path, studies_dir):
    """The space is capped by the most blocks of any start model (here the teacher's); the student has none, so
    dropping one from it is refused by the build, in the trial's process: that trial is refused with the reason,
    the study goes on and resumes."""
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "placement": "ort-cpu",
                "precision": "fp32",
                "student": True,
                "drop_blocks": 1,
                "batch_size": 1,
                "threads": 1,
            }
        )
    )
    args = (
        "--model",
        f"{TINY}:mobile_net",
        "--student",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "40",
        "--recover-steps",
        "4",
        "--studies-dir",
        str(studies_dir),
        "--space",
        str(space),
        "--study",
        "refused-inside",
        "--remeasure-rounds",
        "0",
        "--json",
    )
    r = run_tuner(*args, "--n-trials", "2", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="refused-inside", storage=f"sqlite:///{studies_dir}/refused-inside.db")
    refused = study.trials[1]
    assert refused.state == optuna.trial.TrialState.PRUNED
    assert refused.user_attrs["error"].startswith("drop_blocks 1 is refused: this model has 0 blocks")
    again = run_tuner(*args, "--n-trials", "3", timeout=900)  # a resume is not stuck on the refusal
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]


def test_near_chance_flags_a_model_that_has_not_learned_the_data():
    from tuner.metric import chance_warning, near_chance

    assert near_chance(0.113, 10, 1000) and near_chance(0.14, 10, 360)  # 11.3%: the mobilenet_v2 of issue 28
    assert not near_chance(0.25, 10, 360) and not near_chance(0.9, 10, 20)
    assert near_chance(0.6, 2, 50) and not near_chance(0.9, 2, 50)  # two classes: 50% is chance
    assert not near_chance(0.03, 1000, 50000)  # 30x chance on 1000 classes
    text = chance_warning({"accuracy": 0.5, "top1": 0.11, "num_classes": 10, "validation_images": 360})
    assert text is not None and "11.0% on 10 classes (chance: 10.0%)" in text  # a custom metric's top-1 decides


def test_a_chance_level_baseline_is_warned_about_on_screen_and_in_the_report(studies_dir, tmp_path):
    r = run_tuner(
        "--model",
        f"{TINY}:conv_net",
        "--resolution",
        "16",
        "--train-steps",
        "1",
        "--studies-dir",
        str(studies_dir),
        "--n-trials",
        "1",
        "--study",
        "chance",
        "--remeasure-rounds",
        "0",
        "--space",
        "default",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning: the reference model's top-1 is" in r.stderr and "(chance: 10.0%)" in r.stderr
    page = tmp_path / "chance.html"
    assert (
        run_tuner("report", "--study", "chance", "--studies-dir", str(studies_dir), "--out", str(page)).returncode == 0
    )
    assert (
        "warning: the reference model&#x27;s top-1 is" in page.read_text()
        or "warning: the reference model's top-1 is" in page.read_text()
    )
