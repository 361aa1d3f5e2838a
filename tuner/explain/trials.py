"""A study's trials explained: ``explain_study`` is what ``tuner explain`` runs (rebuild the pick and the baseline
of a study, profile both, cached beside the build, compare them); ``write_profile`` is what an export writes.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from tuner.defaults import DEFAULTS
from tuner.explain.compare import Comparison, compare
from tuner.explain.layers import LayerProfile
from tuner.explain.profile import profile, refuse

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna

    from tuner.passes.chain import Built
    from tuner.record import TrialRecord
    from tuner.workload import Workload

PROFILE_FILE = "profile.json"
REPEATS = DEFAULTS.repeats


def profile_key(built: Built, repeats: int) -> str:
    """Everything that changes a profile: the artifact's content (the ONNX file, or the torch module's weights),
    the candidate, the repeats, this machine and its libraries, and the profiler's code."""
    from tuner import hardware
    from tuner.cache import code_id, make_key, sha256_file, tensor_hash

    if built.onnx_path is not None:
        artifact = sha256_file(built.onnx_path)
    else:
        assert built.model is not None
        artifact = tensor_hash(built.model.state_dict())
    return make_key(
        stage="profile",
        artifact=artifact,
        candidate=built.candidate.to_dict(),
        repeats=repeats,
        host=hardware.fingerprint_id(),
        code=code_id("tuner.explain.profile", "tuner.explain.match"),
    )


def cached_profile(w: Workload, built: Built, repeats: int = REPEATS) -> LayerProfile:
    """``profile`` of ``built``, kept in the workload's cache under ``profile_key`` (profile.json)."""

    def make(d: Any) -> None:
        modules = None  # an ONNX build's nodes matched against the reference model's own module names
        if built.model is None and w.builder is not None and not built.candidate.student:
            modules = [name for name, _ in w.reference_model().named_modules()]
        (d / PROFILE_FILE).write_text(json.dumps(profile(built, w.data, repeats, modules=modules).to_dict(), indent=1))

    entry = w.cache.entry(profile_key(built, repeats), make)
    return LayerProfile.from_dict(json.loads((entry / PROFILE_FILE).read_text()))


def read_trials(study: optuna.Study, trial: int | None, against: int | None) -> tuple[TrialRecord, TrialRecord | None]:
    """The trial explained (default: the study's pick, the fastest feasible) and the one it is held against
    (default: the baseline). The one place ``explain`` reads a study's trials."""
    from tuner import results
    from tuner.artifact.select import select_trial
    from tuner.errors import TunerError

    if trial is None:
        pick = results.fastest_feasible(results.points(study))
        if pick is None:
            raise TunerError(f"study {study.study_name} has no completed feasible trial to explain; pass --trial N.")
        trial = pick.point.number
    explained, _ = select_trial(study, trial=trial)
    if against is None:
        base = results.baseline_trial(study)
        against = base.number if base is not None and base.number != explained.number else None
    other = select_trial(study, trial=against)[0] if against is not None else None
    return explained, other


def explain_study(
    study: optuna.Study,
    trial: int | None = None,
    against: int | None = None,
    studies_dir: str = DEFAULTS.studies_dir,
    repeats: int = REPEATS,
) -> Comparison:
    """Rebuild the trial (the pick by default) and the one it is held against (the baseline), profile both,
    compare them."""
    from tuner.candidate import label
    from tuner.errors import TunerError
    from tuner.passes.chain import build
    from tuner.record import read_study
    from tuner.runtimes.registry import check_supported
    from tuner.study.storage import write_explain
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    explained, other = read_trials(study, trial, against)
    for t in (explained, other):
        if t is not None:
            c = t.to_candidate()
            if (why := refuse(c.placement)) is not None:
                raise TunerError(f"trial #{t.number}: {why}; pass --trial/--against with a CPU placement.")
            check_supported(c)
    spec = WorkloadSpec.from_record(read_study(study).workload, f"{studies_dir}/cache", f"study {study.study_name}")
    workload = load_workload(spec)
    profiles = []
    for t in (explained, other):
        if t is None:
            profiles.append(None)
            continue
        c = t.to_candidate()
        _log.info(f"profiling trial #{t.number}: {label(c.to_dict())}")
        profiles.append(cached_profile(workload, build(workload, c), repeats))
    assert profiles[0] is not None
    done = compare(
        profiles[0],
        profiles[1],
        explained.number,
        other.number if other else None,
        label(explained.to_candidate()),
        label(other.to_candidate()) if other else "",
    )
    write_explain(study, done.to_record())  # the report's layer view draws the last one
    return done


def costliest(p: LayerProfile, n: int = 3) -> list[str]:
    """README lines naming the ``n`` costliest layers of a profile: time per call, share, precision, kernel."""
    layers = sorted(p.layers(), key=lambda la: -la.ms)[:n]
    return [
        f"- `{la.module}`: {la.ms:.3f} ms per call of batch {p.batch_size} ({la.share:.0%} of the profiled call), "
        f"runs {la.precision}" + (f" ({', '.join(la.kernels[:2])})" if la.kernels else "")
        for la in layers
    ]


def write_profile(out: Any, p: LayerProfile) -> list[str]:
    """``out/profile.json`` (the whole profile), and the README lines naming the costliest layers: what export
    writes beside an artifact."""
    from pathlib import Path

    (Path(out) / PROFILE_FILE).write_text(json.dumps(p.to_dict(), indent=1))
    head = f"Where the time goes ({p.placement} {p.precision}; {PROFILE_FILE} has every node):"
    return [head, *costliest(p)]
