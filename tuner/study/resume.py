"""What a resumed study checks before it runs a trial: that the workload is the one it was made on, and that the
search space gives each parameter a distribution Optuna can add to the stored ones.

Either refusal is one line naming what changed and the fix, before anything is written: a study resumed on other
data or weights would measure new trials against the old reference (two workloads' trials on one front); a
parameter Optuna cannot merge would fail every trial that samples it, each failure counted toward --n-trials."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from tuner.errors import ConfigError
from tuner.record import IDENTITY_ATTR, read_study

if TYPE_CHECKING:
    from tuner.space import SearchSpace
    from tuner.workload_spec import WorkloadSpec


# ---------------------------------------------------------------- the workload


def check_workload(study: optuna.Study, name: str, identity: dict[str, Any], spec: WorkloadSpec) -> None:
    """Refuse to go on under another workload than the study's; a study made before studies recorded theirs
    (or a new one) records this one."""
    kept = read_study(study)
    if kept.identity is None:
        study.set_user_attr(IDENTITY_ATTR, identity)
        return
    changes = workload_changes(kept.identity, identity, kept.workload or {}, spec)
    if changes:
        what, fixes = zip(*changes)
        raise ConfigError(
            f"study {name} was made on another workload: {'; '.join(what)}; pass --study NEW to start "
            f"a new study, or {', '.join(dict.fromkeys(fixes))} to resume it."
        )


def workload_changes(
    old: dict[str, Any], new: dict[str, Any], old_spec: dict[str, Any], spec: WorkloadSpec
) -> list[tuple[str, str]]:
    """(what changed, how to get the study's back) for each part of the identity that differs. The data's hash
    covers the resolution and the split: a change of those is named, not the data's."""
    found = []
    if old.get("resolution") != new.get("resolution"):
        found.append(
            (
                f"--resolution {new.get('resolution')} (the study's: {old.get('resolution')})",
                f"pass --resolution {old.get('resolution')}",
            )
        )
    if old.get("normalization") != new.get("normalization"):
        found.append(
            (f"--mean/--std {_mean_std(new)} (the study's: {_mean_std(old)})", "pass the study's --mean and --std")
        )
    if old.get("split") != new.get("split"):
        then, now = (" ".join(f"--{k} {v}" for k, v in (d.get("split") or {}).items()) for d in (old, new))
        found.append((f"{now} (the study's: {then})", "pass the study's --seed and --holdout"))
    if old.get("model") != new.get("model"):
        found.append((f"the model's code ({spec.model})", "restore the model it was made with"))
    if old.get("student") != new.get("student"):
        found.append((f"the --student ({spec.student or 'none'})", "pass the study's --student"))
    if spec.onnx and old.get("weights") != new.get("weights"):  # the file holds the weights
        found.append((f"the content of {spec.model}", "restore the model file it was made with"))
    elif old.get("weights") != new.get("weights") and (
        spec.weights or old_spec.get("weights") or old.get("model") == new.get("model")
    ):
        found.append((_weights_change(old_spec.get("weights"), spec), "restore the weights it was made with"))
    if old.get("data") != new.get("data") and not any(w.startswith(("--resolution", "--seed")) for w, _ in found):
        count = (
            f"{new.get('images')} images, the study's {old.get('images')}"
            if old.get("images") != new.get("images")
            else "as many images, other content"
        )
        found.append((f"the data in {spec.data} differ ({count})", "restore the data it was made with"))
    return found


def _mean_std(identity: dict[str, Any]) -> str:
    values = identity.get("normalization") or []
    return f"{values[:3]}/{values[3:]}"


def _weights_change(old: str | None, spec: WorkloadSpec) -> str:
    if spec.weights and old and old != spec.weights:
        return f"--weights {spec.weights} (the study's: {old})"
    if spec.weights and old == spec.weights:
        return f"the content of --weights {spec.weights}"
    if spec.weights or old:
        return f"--weights {spec.weights or '(none)'} (the study's: {old or 'none, a baseline trained here'})"
    return "the reference weights (the baseline trained here: another --train-steps or other library versions)"


# ---------------------------------------------------------------- the search space


def check_space(study: optuna.Study, space: SearchSpace, name: str) -> None:
    """Refuse a space that gives a parameter the study sampled a distribution Optuna cannot put beside the stored
    one: other choices, a choice turned into a range (or back), another log scale. A range's bounds may change."""
    stored: dict[str, BaseDistribution] = {}
    for trial in study.get_trials(deepcopy=False):
        for param, dist in trial.distributions.items():
            stored.setdefault(param, dist)
    for param, dist in space_distributions(space).items():
        if param not in stored:
            continue
        try:
            check_distribution_compatibility(stored[param], dist)
        except ValueError:
            raise ConfigError(
                f"{space.source}: {param} gives {_describe(dist)} but study {name} sampled it from "
                f"{_describe(stored[param])}, which Optuna cannot change within a study (a range's "
                "bounds it can); pass --study NEW to start a new study, or restore the study's "
                f"{param} to resume it."
            ) from None


def space_distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The distribution of each Optuna param the space may suggest (``Param.sample``), by its Optuna name."""
    found: dict[str, BaseDistribution] = {}
    for p in space.params:
        if p.fixed is not None:
            continue
        try:
            if isinstance(p.choices, dict):  # per: one param per value of another
                found.update({f"{p.name}@{k}": CategoricalDistribution(list(v)) for k, v in p.choices.items()})
            elif p.choices is not None:
                found[p.name] = CategoricalDistribution(list(p.choices))
            elif isinstance(p.low, int) and isinstance(p.high, int) and (p.step is None or isinstance(p.step, int)):
                found[p.name] = IntDistribution(p.low, p.high, log=p.log, step=p.step or 1)
            else:
                assert p.low is not None and p.high is not None
                found[p.name] = FloatDistribution(p.low, p.high, log=p.log, step=p.step)
        except ValueError:  # a range Optuna refuses (log with a step): each trial says so, as before
            continue
    return found


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"the choices {list(dist.choices)}"
    assert isinstance(dist, (IntDistribution, FloatDistribution))
    return f"a {'log ' if dist.log else ''}range {dist.low:g}-{dist.high:g}"
