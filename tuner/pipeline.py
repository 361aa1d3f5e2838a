"""One trial's work, Optuna-free: build the candidate, measure it, return plain data; and the reference
model's score, which every accuracy drop is against."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import numpy as np

    from tuner.candidate import Candidate
    from tuner.corruptions import Corrupted
    from tuner.dataset import Split
    from tuner.guardrails import Predictions, Tally
    from tuner.runtimes.base import Session
    from tuner.workload import Workload

REFERENCE_BATCH = 256
CLAIM_WAIT = "claim_wait"  # the build step that is another worker's build of an entry this trial needed


@dataclass(frozen=True)
class Evaluation:
    candidate: dict[str, Any]
    metrics: dict[str, Any]  # tuner.measure.Metrics as a dict
    build_seconds: dict[str, float] = field(default_factory=dict)
    cache_hits: int = 0
    cache_misses: int = 0
    logits: np.ndarray | None = None  # the validation logits, when a metric of the user's scores them


def evaluate(
    workload: Workload,
    candidate: Candidate,
    min_accuracy: float | None = None,
    keep_logits: bool = False,
    load: bool = False,
    baseline: Predictions | None = None,
    limits: dict[str, float] | None = None,
    corruptions: bool = False,
    min_corruption: float | None = None,
) -> Evaluation:
    """``load``: measure it under load too (the study's objectives use a figure under load); ``baseline``: the
    reference's validation predictions, for the guardrail figures (``limits``: where they stop it early);
    ``corruptions``: top-1 on the corruption set too (``min_corruption``: where it stops early)."""
    import numpy as np

    from tuner.errors import HopelessCandidate
    from tuner.measure import LoadPolicy, measure
    from tuner.passes.chain import build  # torch and the runtimes load in the trial's process, not its parent's

    hits, misses, waited = workload.cache.hits, workload.cache.misses, workload.cache.waited
    built = build(workload, candidate)
    corrupted = corruption_set(workload) if corruptions else None
    if workload.cache.waited > waited:  # time spent waiting for another worker's build of an entry (tuner.claims)
        built.seconds[CLAIM_WAIT] = workload.cache.waited - waited
    kept: list[np.ndarray] | None = [] if keep_logits else None
    try:
        metrics = measure(
            built,
            workload.data,
            min_accuracy=min_accuracy,
            keep_logits=kept,
            load=LoadPolicy() if load else None,
            baseline=baseline,
            limits=limits,
            corrupted=corrupted,
            min_corruption=min_corruption,
        )
    except HopelessCandidate as err:  # what it cost goes with it (an exception's attributes survive pickling)
        err.build_seconds = dict(built.seconds)  # type: ignore[attr-defined]
        raise
    return Evaluation(
        candidate.to_dict(),
        metrics.to_dict(),
        built.seconds,
        workload.cache.hits - hits,
        workload.cache.misses - misses,
        np.concatenate(kept) if kept else None,
    )


def corruption_set(workload: Workload) -> Corrupted:
    """The workload's corruption set (``tuner.corruptions``), made once per data, resolution and seed."""
    from pathlib import Path

    from tuner import corruptions

    spec = workload.spec
    return corruptions.load(workload.data, spec.seed, Path(spec.cache_dir) if spec.cache_dir else None, spec.claims)


def reference_session(workload: Workload) -> Session:
    """The model as the user brought it, opened to be scored: the torch module in fp32, or an ONNX file as given
    on ort-cpu fp32 (no torch graph to run)."""
    from tuner import hardware
    from tuner.runtimes.registry import PLACEMENTS

    w = workload
    if w.onnx is not None:
        return PLACEMENTS["ort-cpu"].open(None, w.onnx.path, "fp32", "all", hardware.cores())
    return PLACEMENTS["torch-cpu"].open(w.reference_model(), None, "fp32", "all", hardware.cores())


def reference_accuracy(
    workload: Workload,
    split: Split | None = None,
    keep: list[np.ndarray] | None = None,
    check_varies: bool = False,
    tally: Tally | None = None,
) -> float:
    """Top-1 of the model as brought (``reference_session``) on ``split`` (the validation split); with
    ``check_varies``, a model whose outputs vary between identical evaluations is warned about (``varies``)."""
    from tuner.measure.accuracy import top1

    session = reference_session(workload)
    try:
        if check_varies:
            # the reference's own first batch, evaluated twice: no batch size the model was not asked for anyway
            note = varies(session, workload.data.example(min(REFERENCE_BATCH, len(workload.data.val))))
            if note:
                _log.warning(note)
        return top1(session, workload.data, REFERENCE_BATCH, split=split, keep=keep, tally=tally)
    finally:
        session.close()


def varies(session: Session, x: np.ndarray) -> str | None:
    """A warning when two evaluations of the same batch differ (dropout left on, noise drawn in ``forward``): every
    accuracy the study measures would then be one draw, the reference's included, and trials would differ by
    chance. None when they agree (to float32 rounding, as threads may sum in another order)."""
    import numpy as np

    a, b = session.predict(x), session.predict(x)
    scale = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
    if a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, scale), equal_nan=True):
        return None
    gap = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else float("nan")
    return (
        f"warning: the model's outputs differ between two evaluations of the same {len(x)} images (by up to "
        f"{gap:.3g}, logits up to {scale:.3g}): randomness in its forward pass, or dropout left on in eval "
        "mode? Every accuracy measured is then one draw; make forward deterministic in eval()."
    )


def reference(workload: Workload, keep_logits: bool = False, corruptions: bool = False) -> dict[str, Any]:
    """The reference every accuracy drop is against, on the validation split; with ``keep_logits``, its logits
    and the labels too (a metric of the user's scores them in the study's process). A model whose outputs vary run to
    run is warned about (once per study: the reference is scored once). Its predictions
    (``predictions``, not JSON: the study's process keeps them for every trial's guardrail figures) and their
    plain figures (``guardrails``: per-class top-1, ECE) come with it; with ``corruptions``, its top-1 on the
    corruption set (``corruption``: what each trial's ``corruption_drop`` is against, and what the set costs)."""
    import numpy as np

    from tuner.guardrails import Tally

    w = workload
    kept: list[np.ndarray] = []
    tally = Tally()
    accuracy = reference_accuracy(w, keep=kept, check_varies=True, tally=tally)
    out = {
        "accuracy": accuracy,
        "workload_key": w.key,
        "data": w.data.name,
        "resolution": w.data.resolution,
        "num_classes": w.data.num_classes,
        "validation_images": len(w.data.val),
        "identity": w.identity(),
    }  # what the study checks on resume (tuner.study.resume)
    if w.onnx is None:  # what the model can give a shallower student (the space's drop_blocks is capped to it)
        out["droppable_blocks"] = droppable_blocks(w)
        out["recovery_prior"] = recovery_prior(w)
    if corruptions:
        out["corruption"] = reference_corruption(w)
    predictions = tally.predictions()
    out.update(guardrails={**predictions.record(), "classes": list(w.data.classes)}, predictions=predictions)
    if keep_logits:
        out.update(logits=np.concatenate(kept), labels=np.asarray(w.data.val.labels))
    return out


def reference_corruption(workload: Workload) -> dict[str, Any]:
    """The reference's top-1 on the corruption set (``reference_session``, batches of ``REFERENCE_BATCH``), with
    the set's recipe and what making it and one pass over it took."""
    from tuner.measure.robustness import corruption_top1

    corrupted = corruption_set(workload)
    session = reference_session(workload)
    try:
        found = corruption_top1(session, workload.data, corrupted, REFERENCE_BATCH)
    finally:
        session.close()
    return {
        "accuracy": found["corruption_accuracy"],
        "by_kind": found["corruption_by_kind"],
        "images": found["corruption_images"],
        "seconds": found["corruption_seconds"],
        "key": corrupted.key,
        "kinds": list(corrupted.kinds),
        "params": corrupted.params,
        "made_seconds": corrupted.made_seconds,
    }


PRIOR_STEPS = 3  # distillation steps timed at setup for the prior (the first, slower one included: it errs long)


def recovery_prior(workload: Workload) -> dict[str, float]:
    """What a recovery will cost before any was seen (``tuner.study.costs``): seconds per distillation step, timed
    on ``PRIOR_STEPS`` steps of the reference distilled into a copy of itself (a compressed student is no dearer),
    the most steps a short recovery takes (all of the compute removed) and how many times the short one's steps
    the long recovery adds. Timed, not derived from the accuracy pass's speed: a pass at large batches in eval mode
    said 14 s a step for a ResNet18 at 96 px whose steps took 2 s."""
    import copy
    import time

    from tuner.passes.recover import LONG_FACTOR, budget_steps
    from tuner.train import train

    w = workload
    teacher = w.reference_model()
    start = time.perf_counter()
    train(copy.deepcopy(teacher), w.data, PRIOR_STEPS, lr=1e-6, teacher=teacher, what="timing a distillation step")
    step_seconds = (time.perf_counter() - start) / PRIOR_STEPS
    steps = budget_steps(1.0, w.spec.recover_steps, "short", len(w.data.train))
    return {"step_seconds": step_seconds, "short_steps": float(steps), "long_extra": float(LONG_FACTOR - 1)}


def droppable_blocks(workload: Workload) -> int:
    """The most blocks any start model of ``workload`` (the user's model, and their student if given) can drop."""
    import torch

    from tuner.passes.student import most_droppable

    example = torch.from_numpy(workload.data.example(2))
    starts = (False, True) if workload.student is not None else (False,)
    return max(most_droppable(workload.start_model(s)[0], example) for s in starts)
