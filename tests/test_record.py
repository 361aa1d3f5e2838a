"""The typed trial record: read from a real Optuna trial with every attr the study loop writes, the one reader of
them (each key the loop or the storage writes is read by tuner.record), and low enough that the study loop and
the rules both import it (tuner.results imports nothing of tuner.study)."""

from __future__ import annotations

import re

import optuna
import pytest

from tests.test_architecture import MODULES, _imports
from tuner import results
from tuner.candidate import Candidate, label
from tuner.objectives import Constraint
from tuner.record import read_enqueued, read_study, read_trials
from tuner.study.counts import count_trials
from tuner.study.storage import quiet_optuna, write_measured, write_remeasure

METRICS = {
    "accuracy": 0.9,
    "accuracy_drop": 5.0,
    "per_sample_ms": 0.5,
    "latency_ms": 4.0,
    "throughput": 2000.0,
    "load_throughput": 1800.0,
    "batch_size": 8,
    "recovery": {"epochs": 1.0},
}
CONSTRAINTS = (Constraint("accuracy_drop", max=2), Constraint("per_sample_ms", max=1.0))


def _study() -> optuna.Study:
    """Trials recorded as tuner.study.loop records them: enqueued flags, the candidate, the machine, the writer of
    figures and constraints, a refused repeat, a crash and its retry."""
    study = optuna.create_study(directions=["maximize", "minimize"], storage=optuna.storages.InMemoryStorage())
    study.set_user_attr("reference", {"accuracy": 0.95, "validation_images": 400})
    study.set_user_attr("constraints", [str(c) for c in CONSTRAINTS])
    study.enqueue_trial({}, user_attrs={"baseline": True, "fixed_point": True})
    built = Candidate(prune_ratio=0.5, recovery="long", precision="int8", placement="ort-cpu", batch_size=8)

    def measured(trial: optuna.Trial) -> list[float]:
        assert read_enqueued(trial).baseline and read_enqueued(trial).fixed_point
        trial.set_user_attr(
            "sampled", Candidate(prune_ratio=0.5, precision="int8", placement="ort-cpu", batch_size=8).to_dict()
        )
        trial.set_user_attr("candidate", built.to_dict())
        trial.set_user_attr("hardware", {"cpu": "test"})
        trial.set_user_attr("worker", "host:1")
        trial.set_user_attr("short_recovery", {"accuracy": 0.8, "per_sample_ms": 0.5, "recovery": {"epochs": 0.1}})
        trial.set_user_attr("build_seconds", {"prune": 1.5, "quantize": 0.25})
        trial.set_user_attr("cache", {"hits": 2, "misses": 3})
        write_measured(trial, METRICS, CONSTRAINTS)
        return [METRICS["accuracy"], METRICS["per_sample_ms"]]

    def refused(trial: optuna.Trial) -> list[float]:
        trial.set_user_attr("candidate", built.to_dict())
        trial.set_user_attr("duplicate_of", 0)
        trial.set_user_attr("error", "needs AVX-512\nsecond line")
        raise optuna.TrialPruned("needs AVX-512")

    def crashed(trial: optuna.Trial) -> list[float]:
        trial.set_user_attr("error", "the trial's process died (signal 9)")
        trial.set_user_attr("crashed", True)
        raise RuntimeError("crashed")

    with quiet_optuna():  # Optuna would log the caught crash with its traceback
        study.optimize(measured, n_trials=1)
        study.optimize(refused, n_trials=1)
        study.optimize(crashed, n_trials=1, catch=(RuntimeError,))
    study.enqueue_trial({}, user_attrs={"retry_of": 2, "anchor": True})
    study.optimize(lambda t: [0.5, 1.0], n_trials=1)
    # What the storage's heartbeat does when a worker dies (tuner.study.storage.make_storage): queue it again.
    with quiet_optuna():
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[2])
    return study


def test_a_trial_reads_back_as_the_loop_wrote_it():
    study = _study()
    done, repeat, failed, retry, stale = read_trials(study)
    assert (done.number, done.state, done.complete) == (0, "complete", True)
    assert done.baseline and done.fixed_point and not done.anchor
    assert Candidate.from_dict(done.candidate).recovery == "long" and done.sampled["recovery"] == "short"
    assert done.to_candidate().precision == "int8" and done.filled == done.candidate
    assert done.metrics == METRICS and done.metrics["recovery"] == {"epochs": 1.0}
    # The constraints as Optuna itself reads them (FrozenTrial.constraints), named in words; feasible = all <= 0.
    assert done.constraints == pytest.approx({"accuracy_drop <= 2": 3.0, "per_sample_ms <= 1": -0.5})
    assert study.trials[0].constraints == done.constraints and not results.is_feasible(done)
    assert study.trials[0].user_attrs["constraint: accuracy_drop <= 2"] == pytest.approx(3.0)  # the dashboard's
    assert study.trials[0].user_attrs["load_throughput"] == 1800.0  # a figure users sort by, plain
    assert done.short_recovery["accuracy"] == 0.8 and done.build_seconds == {"prune": 1.5, "quantize": 0.25}
    assert (done.cache_hits, done.cache_misses, done.hardware, done.worker) == (2, 3, {"cpu": "test"}, "host:1")
    assert done.error == "" and done.duplicate_of is None and not done.repeat and done.retried_from is None

    assert (repeat.state, repeat.duplicate_of, repeat.repeat, repeat.metrics) == ("pruned", 0, True, None)
    assert repeat.error.startswith("needs AVX-512") and not repeat.complete and repeat.constraints == {}
    assert results.describe_trial(repeat) == f"#1 {label(repeat.candidate)}: pruned (needs AVX-512)"
    assert (failed.state, failed.crashed, failed.candidate, failed.filled) == ("fail", True, None, {})
    assert (retry.retry_of, retry.retried_from, retry.anchor, retry.baseline) == (2, 2, True, False)
    assert (stale.state, stale.stale_retry_of, stale.retried_from, stale.retry_of) == ("waiting", 2, 2, None)
    assert count_trials(study) == (2, 0, 1, 1, 0)  # #2 is accounted by its retries, #1 repeated: not at all
    # The rules see the completed trials that recorded what they measured (#3 completed, but recorded nothing).
    assert retry.state == "complete" and [r.number for r in results.completed(study)] == [0]


def test_the_study_record():
    study = _study()
    kept = read_study(study)
    assert kept.reference_accuracy == 0.95 and kept.constraints == ("accuracy_drop <= 2", "per_sample_ms <= 1")
    assert kept.remeasure == {} and kept.fingerprint is None
    write_remeasure(study, {"rounds": 2, "trials": {"0": {"per_sample_ms": 0.4}, "1": {"error": "boom"}}})
    assert read_study(study).remeasure == {0: {"per_sample_ms": 0.4, "rounds": 2}}


def test_every_attr_the_loop_writes_is_read_by_the_record():
    """A key written by the study loop or the storage writers and read nowhere would be a reader's dict lookup."""
    written = set()
    for module in ("tuner.study.loop", "tuner.study.objective", "tuner.study.storage"):
        source = MODULES[module].read_text()
        written |= set(re.findall(r'trial\.set_user_attr\("([a-z_]+)"', source))
        written |= set(re.findall(r'user_attrs=\{"([a-z_]+)"', source))
    record = MODULES["tuner.record"].read_text()
    assert {"metrics", "candidate", "sampled", "error", "duplicate_of", "crashed", "baseline"} <= written
    assert not [k for k in written if f'"{k}"' not in record]


def test_user_attrs_are_read_only_in_the_record():
    for name, path in MODULES.items():
        if name != "tuner.record":
            reads = re.findall(r"user_attrs\[|trial\.user_attrs\.get\(|\bt\.user_attrs\b", path.read_text())
            assert not reads, f"{name} reads trial attrs itself: {reads}"


def test_the_record_sits_below_the_study_and_the_rules():
    def tuner_imports(name: str) -> set[str]:
        return {m for m, _ in _imports(MODULES[name], name) if m.startswith("tuner")}

    assert tuner_imports("tuner.record") <= {"tuner.candidate", "tuner.errors", "tuner.names"}
    assert not [m for m in tuner_imports("tuner.results") if m.startswith("tuner.study")]
    assert "tuner.results" in tuner_imports("tuner.study.loop") and "tuner.record" in tuner_imports("tuner.study.loop")


def test_a_study_from_before_points_reads_its_drops_in_points():
    """Studies made before the drop's unit was points kept it as a fraction, with no ``drop_unit`` attr: a resume
    a week later reads 0.012 as 1.2 points, never as 0.012 points."""
    study = optuna.create_study(directions=["maximize", "minimize"], storage=optuna.storages.InMemoryStorage())
    old = {"accuracy": 0.938, "accuracy_drop": 0.012, "per_sample_ms": 0.5}
    study.add_trial(optuna.trial.create_trial(values=[0.938, 0.5], user_attrs={"metrics": old}))
    trial = optuna.trial.create_trial(values=[0.938, 0.5])
    write_measured(trial, dict(old, accuracy_drop=1.2), ())
    study.add_trial(trial)
    assert [r.metrics["accuracy_drop"] for r in read_trials(study)] == pytest.approx([1.2, 1.2])
