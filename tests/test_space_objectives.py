import optuna
import pytest
import torch
import yaml

from tests.conftest import ROOT
from tuner.candidate import Candidate
from tuner.errors import ConfigError
from tuner.objectives import load_objectives
from tuner.space import load_space


def _write(tmp_path, data, name="f.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def test_default_space_keeps_exactly_what_this_machine_runs():
    """Every placement of the shipped file is either kept or dropped with its runtime's own reason, never both."""
    from tuner.runtimes.registry import PLACEMENTS

    space = load_space("default")
    listed = yaml.safe_load((ROOT / "search_spaces" / "default.yaml").read_text())["placement"]["choices"]
    assert "torch-cpu" in space.placements and "ort-cpu" in space.placements
    for name in listed:
        reason = PLACEMENTS[name].unavailable()
        assert (name in space.placements) == (reason is None), (name, reason)
        assert (f"{name}: {reason}" in space.dropped) == (reason is not None), (name, space.dropped)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_default_space_on_a_machine_without_cuda():
    space = load_space("default")
    assert not any("cuda" in p or "tensorrt" in p for p in space.placements)
    assert any(d.startswith("ort-cuda: ") for d in space.dropped)
    assert any(d.startswith("torch-cuda: ") for d in space.dropped)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_default_space_on_a_machine_with_cuda():
    space = load_space("default")
    assert "torch-cuda" in space.placements and not any(d.startswith("torch-cuda: ") for d in space.dropped)


def test_sampling_respects_conditions():
    space = load_space("default")
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        c = space.sample(trial)
        assert isinstance(c, Candidate) and c.placement in space.placements
        assert ("graph_opt" in trial.params) == c.placement.startswith("ort")
        assert f"precision@{c.placement}" in trial.params
        seen.add((c.placement, c.precision))
        study.tell(trial, 0.0)
    assert ("ort-cpu", "int8") in seen and ("torch-cpu", "fp32") in seen
    assert ("ort-cpu", "bf16") not in seen and ("torch-cpu", "int8") not in seen


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"prune": {"low": 0, "high": 0.5}}, "unknown key 'prune'"),
        ({"prune_ratio": {"low": 0.5, "high": 0.1}}, "low <= high"),
        ({"prune_ratio": {"low": 0, "high": 1.5}}, "prune_ratio: `0 <= prune_ratio < 1`"),
        ({"precision": {"choices": ["fp32", "int4"]}}, "precision: precision must be one of"),
        ({"batch_size": {"choices": []}}, "choices must be a non-empty list"),
        ({"graph_opt": {"choices": ["all"], "when": {"placement": ["ort-cpu"]}}}, "`when` must map other keys"),
        (
            {"placement": {"choices": ["ort-cpu"]}, "precision": {"per": "placement", "choices": ["fp32"]}},
            "with `per`, choices must map",
        ),
        ({"threads": {"low": 1, "high": 2, "stride": 1}}, "unknown setting(s) stride"),
        ({"placement": {"choices": ["torch-cuda", "ort-tensorrt"]}}, "no placement in this space runs"),
        ("- a list", "a search space is a mapping"),
    ],
)
def test_invalid_spaces_name_file_key_and_rule(tmp_path, data, needle):
    if "no placement" in needle and torch.cuda.is_available():
        pytest.skip("CUDA present")
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert path in str(err.value) and needle in str(err.value)


def test_shipped_objectives_load():
    o = load_objectives("accuracy_latency")
    assert o.names == ("accuracy", "per_sample_ms") and o.directions == ("maximize", "minimize")
    assert [str(c) for c in o.constraints] == ["accuracy_drop <= 1"]
    slo = load_objectives("latency_slo")  # under load: throughput in the open loop, its p95 within the budget
    assert slo.names == ("accuracy", "open_throughput") and slo.uses_load and not o.uses_load
    assert "open_p95_ms" in [c.metric for c in slo.constraints]
    assert load_objectives("throughput").names == ("accuracy", "load_throughput")
    assert "compressed_mb" in load_objectives("accuracy_size").names
    c = o.constraints[0]
    assert c.violation({"accuracy_drop": 2}) > 0 >= c.violation({"accuracy_drop": 0.5})


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"objectives": {"speed": "maximize"}}, "unknown metric 'speed'"),
        ({"objectives": {"accuracy": "up"}}, "must be maximize or minimize"),
        ({"objectives": {}}, "one or more metrics"),
        ({"objectives": {"accuracy": "maximize"}, "constraints": {"accuracy_drop": 0.01}}, "{max: NUMBER}"),
        ({"goals": {}}, "expected the keys"),
    ],
)
def test_invalid_objectives(tmp_path, data, needle):
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=None) as err:
        load_objectives(path)
    assert path in str(err.value) and needle in str(err.value)


def test_a_drop_budget_is_in_points_and_one_that_reads_like_a_fraction_is_refused():
    def objectives(bound):
        return load_objectives({"objectives": {"accuracy": "maximize"}, "constraints": {"accuracy_drop": bound}})

    with pytest.raises(ConfigError, match=r"accuracy_drop max 0.01 is ambiguous: .*write 1 for 1 points"):
        objectives({"max": 0.01})
    assert objectives({"max": 0}).min_accuracy(0.9) == pytest.approx(0.9)  # no drop at all
    assert objectives({"max": 1.5}).min_accuracy(0.9) == pytest.approx(0.885)
    assert [c.words for c in objectives({"max": 1.5}).constraints] == ["accuracy_drop <= 1.5 (points)"]


def test_python_entry_points_name_their_keywords_not_the_flags():
    import tuner
    from tuner.errors import TunerError, as_keywords

    text = "--max-drop 0.05 is ambiguous; raise --max-drop, or --out; --data x (--not-a-keyword)"
    assert (
        as_keywords(text, {"max_drop", "path", "train"})
        == "max_drop 0.05 is ambiguous; raise max_drop, or path; train x (--not-a-keyword)"
    )
    with pytest.raises(TunerError, match=r"^n_trials must be >= 1, got 0\.$"):
        tuner.tune(n_trials=0)
