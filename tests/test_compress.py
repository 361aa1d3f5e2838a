"""Compression before precision, on a model that is not a ResNet (depthwise convs, squeeze-excite, hardswish):
ratio profiles, derived students, sparsity, recovery budgets and the study's multi-fidelity rule. Real
torch-pruning, real distillation, real ORT / OpenVINO sessions."""

import copy
import dataclasses

import optuna
import pytest
import torch
from torch import nn

from tests.conftest import TINY
from tests.tiny_models import mobile_net
from tuner.candidate import Candidate
from tuner.errors import UnsupportedCombination
from tuner.measure import measure
from tuner.passes import student as students
from tuner.passes.chain import build, rebuild_module
from tuner.passes.compress import reshape
from tuner.passes.prune import prune
from tuner.passes.recover import LONG_FACTOR, budget_steps, removed_share
from tuner.passes.sparsify import measured_sparsity
from tuner.study import fidelity

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


@pytest.fixture(scope="module")
def mobile(studies_dir):
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    spec = WorkloadSpec(
        model=f"{TINY}:mobile_net",
        data="digits",
        resolution=16,
        train_steps=60,
        recover_steps=10,
        cache_dir=str(studies_dir / "cache"),
    )
    return load_workload(spec)


def _widths(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_global_profile_prunes_groups_unequally_within_bounds():
    """The global ranking keeps different shares of different groups (uniform keeps the same), every kept count
    a multiple of 8 or the group whole, and no group below 1 - MAX_GROUP_RATIO of its width."""
    x = torch.randn(1, 3, 16, 16)
    torch.manual_seed(0)
    reference = mobile_net(10).eval()
    with torch.no_grad():  # one group with many near-dead channels, as trained networks have (the global ranking
        block = reference.blocks[0]  # normalizes each group by its mean: a group's scale alone does not count)
        for layer in (block.expand[0], block.expand[1], block.depthwise[0]):
            layer.weight[16:].mul_(0.01)
    shares = {}
    for profile in ("uniform", "global"):
        model = copy.deepcopy(reference)
        prune(model, 0.5, x, profile, round_to=8)  # multiples of 8: the profile, not the rounding, decides
        kept = {
            n: m.out_channels / reference.get_submodule(n).out_channels
            for n, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups == 1
        }
        shares[profile] = kept
        assert model(x).shape == (1, 10)
        assert min(kept.values()) >= 0.1 - 1e-9
    assert len({round(v, 3) for v in shares["uniform"].values()}) <= 2  # 0.5, or a group too narrow to round
    assert shares["global"]["blocks.0.expand.0"] < shares["uniform"]["blocks.0.expand.0"]  # its weak channels went
    assert shares["global"]["blocks.1.expand.0"] > shares["uniform"]["blocks.1.expand.0"]  # and others kept more


def test_droppable_blocks_and_their_measured_ranking(mobile):
    model = mobile.reference_model()
    names = students.droppable(model, torch.from_numpy(mobile.data.example(2)))
    assert {"blocks.0", "blocks.1", "blocks"} <= set(names) and "stem" not in names  # the stem changes the shape
    ranking = students.ranking(mobile, model, mobile.key)
    assert ranking == students.ranking(mobile, mobile.reference_model(), mobile.key)  # cached, deterministic
    assert [b.error for b in ranking] == sorted(b.error for b in ranking)
    whole = next(b for b in ranking if b.name == "blocks")
    assert whole.error > min(b.error for b in ranking)  # removing both blocks hurts more than the least of them
    chosen = students.choose(
        [students.Block("blocks", 0.0, 1.0), students.Block("blocks.0", 0.0, 1.0), students.Block("stem", 0.0, 1.0)], 2
    )
    assert chosen == ("blocks", "stem")  # never a block inside one already dropped


def test_student_pruned_globally_then_quantized(mobile):
    """The acceptance case: a depthwise / squeeze-excite / hardswish model pruned non-uniformly, one block dropped,
    recovered by distillation, then run in int8 in ONNX Runtime and OpenVINO."""
    base = build(mobile, Candidate())
    c = Candidate(prune_ratio=0.4, prune_profile="global", drop_blocks=1)
    torch_built = build(mobile, c)
    names = torch_built.compression["dropped_blocks"]
    assert len(names) == 1 and isinstance(torch_built.model.get_submodule(names[0]), nn.Identity)
    assert torch_built.macs < 0.75 * base.macs
    record = torch_built.compression["recovery"]
    assert record["fidelity"] == "short" and record["steps"] > 0 and record["loss_end"] < record["loss_start"]
    for placement in ("ort-cpu", "ov-cpu"):
        m = measure(
            build(mobile, Candidate(**{**c.to_dict(), "placement": placement, "precision": "int8"})), mobile.data
        )
        assert m.executed_precision == "int8" and m.dropped_blocks == tuple(names)
        assert m.accuracy > 0.3 and m.macs == torch_built.macs


def test_a_state_dict_alone_rebuilds_its_module(mobile):
    """Blocks absent from the state are dropped and groups pruned to its widths, whatever the fresh weights."""
    c = Candidate(prune_ratio=0.4, prune_profile="global", drop_blocks=1)
    built = build(mobile, c)
    x = torch.from_numpy(mobile.data.example(4))
    torch.manual_seed(123)
    fresh = mobile_net(10)
    rebuilt = rebuild_module(fresh, c, x[:1], built.model.state_dict())
    assert _widths(rebuilt) == _widths(built.model)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), built.model(x), atol=1e-5)
    with pytest.raises(RuntimeError):  # the widths come from the state: another state does not fit
        reshape(mobile_net(10), c, x[:1], mobile_net(10).state_dict()).load_state_dict(built.model.state_dict())


def test_a_users_own_student_is_distilled_compressed_and_quantized(mobile, studies_dir):
    """--student: the user's narrower model, from its own initial weights, distilled from the model within the
    recovery budget (budgeted as all compute removed), one block dropped, then int8 in OpenVINO; cached by
    content; without --student the dimension is refused, and the space drops it with its reason."""
    import dataclasses

    from tuner.space import load_space
    from tuner.workload import load_workload

    w = load_workload(dataclasses.replace(mobile.spec, student=f"{TINY}:narrow_mobile_net", recover_steps=40))
    assert w.key == mobile.key and w.student is not None  # the teacher is the same model
    c = Candidate(student=True, drop_blocks=1)
    built = build(w, c)
    assert built.macs < 0.5 * build(mobile, Candidate()).macs
    record = built.compression["recovery"]
    assert record["fresh"] and record["planned"] == budget_steps(1.0, 40, "short", len(w.data.train))
    assert record["loss_end"] < record["loss_start"]
    assert next(m.out_channels for m in built.model.modules() if isinstance(m, nn.Conv2d)) == 16  # the student's
    m = measure(build(w, Candidate(**{**c.to_dict(), "placement": "ov-cpu", "precision": "int8"})), w.data)
    assert m.executed_precision == "int8" and m.macs == built.macs
    assert m.accuracy > 0.25  # trained from scratch by distillation (43 steps on 898 images): above chance (10%)
    hits = w.cache.hits
    build(w, c)  # the recovered student is cached by content
    assert w.cache.hits > hits
    with pytest.raises(UnsupportedCombination, match="no --student"):
        build(mobile, Candidate(student=True))
    space = load_space("default").without("student", True, "no --student given")
    assert space.values("student") == (False,) and any(d.startswith("student True") for d in space.dropped)


def test_too_many_blocks_is_refused(mobile):
    with pytest.raises(UnsupportedCombination, match="droppable"):
        build(mobile, Candidate(drop_blocks=50))


def test_sparsity_zeros_the_weights_and_shrinks_the_zipped_file(mobile):
    dense = build(mobile, Candidate(placement="ort-cpu"))
    sparse_torch = build(mobile, Candidate(sparsity=0.7))
    assert measured_sparsity(sparse_torch.model) == pytest.approx(0.7, abs=0.03)  # the classifier is kept whole
    sparse = build(mobile, Candidate(sparsity=0.7, placement="ort-cpu"))
    assert sparse.artifact_bytes == pytest.approx(dense.artifact_bytes, rel=0.02)  # dense tensors, same size
    assert sparse.compressed_bytes < 0.7 * dense.compressed_bytes  # but the zeros compress


def test_the_long_recovery_continues_the_short_one_for_more_steps(mobile):
    assert removed_share(50, 100, 0.0) == pytest.approx(0.5) and removed_share(100, 100, 0.5) == pytest.approx(0.5)
    short = build(mobile, Candidate(prune_ratio=0.6)).compression["recovery"]
    long = build(mobile, Candidate(prune_ratio=0.6, recovery="long")).compression["recovery"]
    assert long["before"] == short["steps"] and long["fidelity"] == "long"  # continued the short run
    assert long["before"] + long["planned"] == LONG_FACTOR * short["planned"]  # a rung: 4x the short's steps in all
    assert long["proxy"][0][0] > short["steps"]  # its proxy curve goes on from where the short one ended


def test_promotion_rule():
    floor = 0.90
    close, far, ok = (
        {"accuracy": 0.87, "per_sample_ms": 1.0},
        {"accuracy": 0.80, "per_sample_ms": 1.0},
        {"accuracy": 0.91, "per_sample_ms": 1.0},
    )
    assert fidelity.should_promote(close, floor, fastest_feasible_ms=2.0)
    assert not fidelity.should_promote(close, floor, fastest_feasible_ms=0.5)  # could not become the fastest
    assert not fidelity.should_promote(far, floor, 2.0) and not fidelity.should_promote(ok, floor, 2.0)
    assert fidelity.can_promote(Candidate(prune_ratio=0.2), floor)
    assert not fidelity.can_promote(Candidate(), floor) and not fidelity.can_promote(Candidate(prune_ratio=0.2), None)
    assert not fidelity.can_promote(Candidate(prune_ratio=0.2, recovery="long"), floor)


def test_study_promotes_a_close_candidate_to_the_long_recovery(tmp_path, studies_dir, monkeypatch):
    """A pruned candidate that the short recovery leaves below the floor, and that is faster than every feasible
    point, is recovered longer in the same trial: the trial records the short figures, builds the long one."""
    import yaml

    from tuner.objectives import load_objectives
    from tuner.space import load_space
    from tuner.study.loop import run_study
    from tuner.study.settings import StudySettings
    from tuner.workload_spec import WorkloadSpec

    monkeypatch.setattr(fidelity, "PROMOTE_MARGIN", 1.0)  # every miss is "close": the rule itself is tested above
    space, objectives = tmp_path / "space.yaml", tmp_path / "objectives.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "placement": "ort-cpu",
                "precision": "fp32",
                "prune_ratio": 0.6,
                "batch_size": 1,
                "threads": {"choices": [1, 2]},
            }
        )
    )
    objectives.write_text(
        yaml.safe_dump(
            {
                "objectives": {"accuracy": "maximize", "per_sample_ms": "minimize"},
                "constraints": {"accuracy_drop": {"max": 0.0}},
            }
        )
    )
    spec = WorkloadSpec(
        model=f"{TINY}:conv_net",
        data="digits",
        resolution=16,
        train_steps=80,
        recover_steps=6,
        cache_dir=str(studies_dir / "cache"),
    )
    storage = f"sqlite:///{tmp_path / 'fidelity.db'}"
    settings = StudySettings(
        "fidelity", storage, load_space(str(space)), load_objectives(str(objectives)), spec, n_trials=2
    )
    study = run_study(settings)
    pruned = study.trials[1]
    assert pruned.user_attrs["sampled"]["recovery"] == "short"
    assert pruned.user_attrs["candidate"]["recovery"] == "long"
    short = pruned.user_attrs["short_recovery"]
    assert short["recovery"]["fidelity"] == "short" and short["accuracy"] < study.user_attrs["reference"]["accuracy"]
    if pruned.state == optuna.trial.TrialState.COMPLETE:
        assert pruned.user_attrs["metrics"]["recovery"]["fidelity"] == "long"
    else:
        assert "required" in pruned.user_attrs["error"]
    # Another variant of the same architecture starts from the long recovery it earned (cached), not the short.
    study.enqueue_trial({"threads": 3 - pruned.params["threads"]})
    run_study(dataclasses.replace(settings, n_trials=3))
    variant = optuna.load_study(study_name="fidelity", storage=storage).trials[2]
    assert variant.params["threads"] != pruned.params["threads"]
    assert variant.user_attrs["candidate"]["recovery"] == "long" and "short_recovery" not in variant.user_attrs


def test_a_short_recovery_stopped_far_below_the_floor_names_the_floor(tmp_path, studies_dir):
    """The screen stops a short recovery the long one could not lift to the floor; its reason names both bars, since
    the screen's alone (the floor less the promotion margin) reads like a wrong floor."""
    import yaml

    from tuner.objectives import load_objectives
    from tuner.space import load_space
    from tuner.study.loop import run_study
    from tuner.study.settings import StudySettings
    from tuner.workload_spec import WorkloadSpec

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"placement": "torch-cpu", "prune_ratio": 0.8, "batch_size": 32, "threads": 1}))
    spec = WorkloadSpec(
        model=f"{TINY}:conv_net",
        data="digits",
        resolution=16,
        train_steps=80,
        recover_steps=0,  # pruned and not fine-tuned: far below any floor
        cache_dir=str(studies_dir / "cache"),
    )
    storage = f"sqlite:///{tmp_path / 'screen.db'}"
    settings = StudySettings(
        "screen", storage, load_space(str(space)), load_objectives("accuracy_latency"), spec, n_trials=2
    )
    study = run_study(settings)
    trial, floor = study.trials[1], study.user_attrs["reference"]["accuracy"] - 0.01
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs["error"].startswith("stopped after "), trial.user_attrs["error"]
    assert trial.user_attrs["error"].endswith(f"the floor is {floor:.2%}, out of the long recovery's reach")
