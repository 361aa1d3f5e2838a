"""Recovery: a knowledge-distillation fine-tune of a compressed model (pruned, shallower, sparse) against the
user's model, with a budget in optimizer steps that grows with the compute removed and not with the train split.

A budget in epochs made every compressed trial as dear as the split is large (17x on a 50,000-photo split),
while what a recovery buys levels off after a number of steps that depends on what was removed, not on the
split (benchmarks/HISTORY.md, recovery in steps). So the short recovery takes ``base_steps`` for a model with
half its compute removed, in proportion otherwise, and never more than ``MAX_EPOCHS`` passes over a small split
(where it would only fit the train split closer). It stops before its budget when its validation proxy stops
improving: the distillation loss on a slice of the train split kept out of its training (the validation split is
what the study picks on, so it must not steer the training), checked ``CHECKS`` times a run; the best weights seen
are kept.

Two fidelities (``Candidate.recovery``), rungs of a successive halving: ``short`` is what every new architecture
gets; ``long`` continues the short run (warm start) to ``LONG_FACTOR`` times its steps in all, spent only on
candidates that could reach the front (``tuner.study.fidelity``). Each is cached by content, so one recovered
model serves every precision, placement and batch size.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tuner.dataset import Dataset
from tuner.train import BATCH_SIZE, TEMPERATURE, train
from tuner.workload import BASELINE_LR

LONG_FACTOR = 4  # the long recovery trains this many times the short one's steps, in all
MIN_STEPS = 10  # below this a light compression is still not re-fitted to its teacher
MAX_EPOCHS = 3.0  # the short budget's cap in passes over the train split: more only fits a small split closer
STILL_IMPROVING = 0.02  # the loss of the last fifth of the run this much below the fifth before: stopped early
PROXY_SHARE, PROXY_MAX = 0.1, 256  # the slice of the train split kept out of recovery to judge it on
CHECKS, CHECK_MIN = 10, 4  # proxy checks per run (and at its end), at least this many steps apart
PATIENCE = 3  # checks in a row without a better proxy end the run
MIN_GAIN = 0.01  # a proxy this much (relative) below the best so far counts as better


def removed_share(macs: int, reference_macs: int, sparsity: float) -> float:
    """How much of the model's compute the compression took away (sparsity counts as the zeros it made)."""
    return 1.0 - (macs / max(1, reference_macs)) * (1.0 - sparsity)


def budget_steps(removed: float, base_steps: int, fidelity: str, train_images: int) -> int:
    """This fidelity's steps in all: ``base_steps`` for a model with half its compute removed, in proportion to what
    was removed (at least ``MIN_STEPS``), at most ``MAX_EPOCHS`` passes over ``train_images``; the long fidelity
    ``LONG_FACTOR`` times the short. The same for any split large enough not to be capped."""
    if base_steps <= 0:
        return 0
    cap = max(1, math.ceil(MAX_EPOCHS * train_images / BATCH_SIZE))
    short = min(cap, max(MIN_STEPS, math.ceil(base_steps * removed / 0.5)))
    return short * (LONG_FACTOR if fidelity == "long" else 1)


def proxy_split(train_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices recovery trains on, indices of the proxy slice it is judged on) of a train split: a seeded
    ``PROXY_SHARE`` (at most ``PROXY_MAX``) kept apart; none where the split is too small to spare one."""
    order = np.random.default_rng(seed + 2).permutation(train_images)
    keep = min(PROXY_MAX, int(PROXY_SHARE * train_images))
    return np.sort(order[keep:]), np.sort(order[:keep])


def learning_rate(removed: float) -> float:
    """Gentle for light compression, stronger for heavy: a converged model fine-tuned at a high rate loses
    accuracy it never had to lose. ``r`` is the uniform channel ratio that removes as much compute. Measured on
    digits/ResNet18, 60 steps: at r 0.2, lr 1e-4 kept 99.2% where 1e-3 fell to 97.8%; at 0.5, 1e-3 recovered
    98.1% where 1e-4 reached 97.5%. On imagenette/ResNet18 at 128 px (teacher 76.5%), r 0.2, 1.5 epochs: 1.6e-4
    reached 74.5%, 3e-4 75.5%, 6.4e-4 75.6%; r 0.4, 2 epochs: 6.4e-4 76.3%, 2e-3 74.8%. Hence the floor of 3e-4."""
    r = 1.0 - math.sqrt(max(0.0, 1.0 - removed))
    return min(1e-3, max(3e-4, 4e-3 * r**2))


@dataclass(frozen=True)
class RecoveryRecord:
    """What a recovery did, kept beside its weights and in every trial built from them. ``steps`` and ``seconds``
    are this run's (the long one's beyond the short it continued): what a recovery step costs on this workload."""

    fidelity: str
    steps: int  # optimizer steps this run took
    planned: int  # ... and its budget
    stopped: str  # "budget": it used its steps; "plateau": the proxy stopped improving; "none": nothing to do
    seconds: float  # wall time of the training (proxy checks included)
    removed: float  # share of the compute the compression removed
    lr: float
    loss_start: float  # mean distillation loss of the run's first tenth
    loss_end: float  # ... and of its last tenth
    still_improving: bool  # the train loss was still falling at the end: the student had not matched its teacher
    fresh: bool = False  # the student did not start from the teacher's weights (--student): budgeted as all removed
    before: int = 0  # steps the model had been trained before this run (the short run, for the long)
    proxy: list[list[float]] = field(default_factory=list)  # [step in all, proxy loss, proxy top-1] per check
    kept: int = 0  # the step (in all) whose weights were kept: the best proxy

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def proxy_loss(student: nn.Module, teacher: nn.Module, data: Dataset, idx: np.ndarray) -> tuple[float, float]:
    """(the training objective without augmentation, top-1 against the labels) of ``student`` on ``idx`` of the
    train split."""
    loss = correct = 0.0
    for i in range(0, len(idx), 256):
        part = idx[i : i + 256]
        x = torch.from_numpy(data.normalize(data.train.images[part]))
        y = torch.from_numpy(data.train.labels[part])
        logits, soft = student(x), F.softmax(teacher(x) / TEMPERATURE, dim=1)
        kd = F.kl_div(F.log_softmax(logits / TEMPERATURE, dim=1), soft, reduction="sum") * TEMPERATURE**2
        loss += float(0.5 * F.cross_entropy(logits, y, reduction="sum") + kd)
        correct += float((logits.argmax(1) == y).sum())
    return loss / len(idx), correct / len(idx)


def recover(
    student: nn.Module,
    teacher: nn.Module,
    data: Dataset,
    removed: float,
    budget: int,
    fidelity: str,
    seed: int = 0,
    before: int = 0,
    after_step: Callable[[], None] | None = None,
    fresh: bool = False,
) -> RecoveryRecord:
    """Distil ``teacher`` into ``student`` in place up to ``budget`` steps in all (``budget_steps``), stopping
    early when the proxy stops improving (the best weights are kept); ``before`` steps were trained before (the
    long fidelity continues the short one). A ``fresh`` student keeps none of the teacher's weights: it is
    trained at the baseline's rate."""
    pool, held = proxy_split(len(data.train), seed)
    planned = max(0, budget - before)
    lr = BASELINE_LR if fresh else learning_rate(removed)  # fresh: trained as a baseline is, from its initial weights
    lr *= 0.5 if before else 1.0  # a warm restart: the model is near its optimum
    curve: list[list[float]] = []
    # the lowest proxy's weights are kept; only a gain of MIN_GAIN over the last such gain resets the patience
    best: dict[str, Any] = {"loss": math.inf, "gain": math.inf, "step": before, "state": None, "since": 0}

    def check(step: int) -> bool:
        loss, top1 = proxy_loss(student, teacher, data, held)
        curve.append([before + step, round(loss, 5), round(top1, 5)])
        if loss < best["loss"]:
            best.update(loss=loss, step=before + step, state=copy.deepcopy(student.state_dict()))
        if loss < (1 - MIN_GAIN) * best["gain"]:
            best.update(gain=loss, since=0)
        else:
            best["since"] += 1
        return best["since"] >= PATIENCE

    start = time.perf_counter()
    losses = (
        train(
            student,
            data,
            planned,
            lr=lr,
            seed=seed + before,
            teacher=teacher,
            after_step=after_step,
            what=f"{fidelity} recovery ({removed:.0%} of the compute removed)",
            pool=pool,
            check=check if len(held) else None,
            check_every=max(CHECK_MIN, planned // CHECKS),
        )
        if planned
        else []
    )
    seconds = time.perf_counter() - start
    if best["state"] is not None and best["step"] != before + len(losses):
        student.load_state_dict(best["state"])  # the proxy's best, not the weights the run ended on
    stopped = "none" if not planned else "plateau" if len(losses) < planned else "budget"
    tenth, fifth = max(1, len(losses) // 10), max(1, len(losses) // 5)
    last, earlier = losses[-fifth:], losses[-2 * fifth : -fifth]
    improving = bool(earlier) and float(np.mean(last)) < (1 - STILL_IMPROVING) * float(np.mean(earlier))
    return RecoveryRecord(
        fidelity,
        len(losses),
        planned,
        stopped,
        round(seconds, 3),
        removed,
        lr,
        float(np.mean(losses[:tenth])) if losses else 0.0,
        float(np.mean(losses[-tenth:])) if losses else 0.0,
        improving,
        fresh,
        before,
        curve,
        best["step"] if best["state"] is not None else before + len(losses),
    )
