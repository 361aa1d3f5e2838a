"""What a trial will cost before it starts, and where a finished one's time went, both read from the records.

A candidate whose compressed architecture was recovered before (by any trial of the study: its weights are
cached) costs what a build and a measurement cost: the slowest such trial of the same kind (int8, which
calibrates, or float) so far. A new architecture costs a recovery on top: seconds per distillation step as the
study's own recoveries ran (before any, the prior its worker estimated from the reference's forward speed),
times the most steps a short recovery takes. Estimates err long: a trial that would overrun the budget is worse
than one not started.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuner.candidate import Candidate
from tuner.record import TrialRecord

RECOVERY_STEPS = ("student", "prune", "recover")  # build steps (StepContext.timed) that belong to recovery
CALIBRATION_STEPS = ("sensitivity", "calibrate")
CHEAP_PRIOR_S = 30.0  # a build and a measurement before any was seen (the baseline always runs first)
PROCESS_S = 10.0  # one fresh process of the re-measure: start, imports, the workload, the build from the cache
# Measured: 9.5 s each for the tests' tiny CNN on 2 vCPUs under contention (19 s for 2 measurements).
CATEGORIES = ("setup", "recovery", "calibration", "export", "accuracy", "latency", "re-measure", "overhead")


@dataclass(frozen=True)
class Prior:
    """What a recovery costs before the study has seen one (``tuner.pipeline.recovery_prior``)."""

    step_seconds: float  # one distillation step
    short_steps: float  # the most steps a short recovery takes (all of the compute removed)
    long_extra: float  # the long recovery adds this many times the short one's steps

    @classmethod
    def read(cls, reference: dict[str, Any]) -> Prior | None:
        found = reference.get("recovery_prior")
        return (
            cls(**{k: float(found[k]) for k in ("step_seconds", "short_steps", "long_extra")})
            if isinstance(found, dict)
            else None
        )


@dataclass(frozen=True)
class Estimate:
    seconds: float
    recovery: float  # the part a new recovery takes (0: the architecture is cached)
    what: str  # in words, for the screen and the record

    def words(self) -> str:
        return f"about {self.seconds:.0f} s ({self.what})"


def architecture(c: dict[str, Any]) -> tuple[Any, ...]:
    """What a recovery is cached by, beside the workload: the same tuple means the same recovered weights."""
    f = Candidate.fill(c)
    return (
        f["student"],
        f["drop_blocks"],
        f["prune_ratio"],
        f["prune_profile"] if f["prune_ratio"] else None,
        f["sparsity"],
    )


def recovered(trials: list[TrialRecord], c: dict[str, Any]) -> set[str]:
    """The recoveries (short, long) of ``c``'s architecture that some finished trial of the study built."""
    arch = architecture(c)
    found = {
        str(Candidate.fill(t.candidate)["recovery"])
        for t in trials
        if t.candidate is not None and (t.complete or t.stopped_early) and architecture(t.candidate) == arch
    }
    return found | ({"short"} if "long" in found else set())  # the long recovery continues the short one


def step_seconds(trials: list[TrialRecord], prior: Prior | None) -> float:
    """Seconds per distillation step, as the study's recoveries ran (before any: the prior, which a cold or busy
    setup can price 3x too high, so the first recovery a trial trains replaces it)."""
    done = [r for t in trials for r in _recoveries(t)]
    if done:
        return sum(seconds for seconds, _ in done) / sum(steps for _, steps in done)
    return prior.step_seconds if prior is not None else CHEAP_PRIOR_S / 10


def _recoveries(t: TrialRecord) -> list[tuple[float, float]]:
    """(seconds, steps) of each recovery ``t`` trained itself: a promoted trial's short one and its long one, each
    over the steps it added (a long recovery continues a short one, maybe another trial's cached one)."""
    if not t.trained:
        return []
    short, final = (t.short_recovery or {}).get("recovery"), (t.metrics or {}).get("recovery")
    records = [short, final] if isinstance(short, dict) else [final]
    found = []
    for r in records:
        if not isinstance(r, dict) or not r.get("steps"):
            continue
        added = float(r["steps"]) - float(r.get("before") or 0.0)
        # a record's own seconds; the build's "recover" step where one recovery is all the trial trained
        seconds = float(r.get("seconds") or (t.build_seconds.get("recover", 0.0) if len(records) == 1 else 0.0))
        if added > 0 and seconds > 0:
            found.append((seconds, added))
    return found


def cheap_seconds(trials: list[TrialRecord], int8: bool) -> float:
    """A build and measurement without a new recovery: the slowest of the same kind so far (any kind, else a prior)."""

    def cost(t: TrialRecord) -> float:
        return max(0.0, (t.seconds or 0.0) - sum(t.build_seconds.get(k, 0.0) for k in RECOVERY_STEPS))

    done = [t for t in trials if t.complete and t.seconds is not None and not t.repeat]
    same = [cost(t) for t in done if (Candidate.fill(t.candidate or {})["precision"] == "int8") == int8]
    return max(same or [cost(t) for t in done] or [CHEAP_PRIOR_S])


def estimate(c: Candidate, trials: list[TrialRecord], prior: Prior | None) -> Estimate:
    """What building and measuring ``c`` will take, from what the study's trials took."""
    cheap = cheap_seconds(trials, c.precision == "int8")
    if not c.compresses or c.recovery in recovered(trials, c.to_dict()):
        return Estimate(cheap, 0.0, "its architecture is cached" if c.compresses else "no recovery")
    per_step = step_seconds(trials, prior)
    steps = prior.short_steps if prior is not None else 100.0
    what = "a new short recovery"
    if c.recovery == "long":
        done = "short" in recovered(trials, c.to_dict())
        steps = steps * (prior.long_extra if prior else 3.0) + (0.0 if done else steps)
        what = "a long recovery"
    seconds = per_step * steps
    return Estimate(cheap + seconds, seconds, f"{what} ~{seconds:.0f} s, then build and measure ~{cheap:.0f} s")


def long_recovery_seconds(short_steps: int, trials: list[TrialRecord], prior: Prior | None) -> float:
    """The long recovery of an architecture whose short one took ``short_steps`` (it continues from it)."""
    return step_seconds(trials, prior) * short_steps * (prior.long_extra if prior is not None else 3.0)


def remeasure_seconds(points: list[TrialRecord], rounds: int) -> float:
    """The end-of-study re-measure of ``points`` (the front and the baseline): one fresh process per point and
    round, each timing it as long as its trial's latency took."""

    def one(t: TrialRecord) -> float:
        m = t.metrics or {}
        return PROCESS_S + max(0.0, float(m.get("measure_seconds") or 0.0) - float(m.get("accuracy_seconds") or 0.0))

    return rounds * sum(one(t) for t in points)


def spent(t: TrialRecord) -> dict[str, float]:
    """One finished trial's time by category; what no step accounts for (the process, the storage) is overhead."""
    b, m = t.build_seconds, t.metrics or {}
    out = {
        "recovery": sum(b.get(k, 0.0) for k in RECOVERY_STEPS),
        "calibration": sum(b.get(k, 0.0) for k in CALIBRATION_STEPS),
    }
    out["export"] = sum(b.values()) - out["recovery"] - out["calibration"]  # fold, export, convert
    measured, accuracy = float(m.get("measure_seconds") or 0.0), float(m.get("accuracy_seconds") or 0.0)
    out["accuracy"], out["latency"] = accuracy, max(0.0, measured - accuracy)
    out["overhead"] = max(0.0, (t.seconds or 0.0) - sum(out.values()))
    return out


def account(trials: list[TrialRecord], record: dict[str, Any]) -> dict[str, Any]:
    """Where a run's time went (``record``: what ``tuner.study.budget.Plan.record`` kept on the study): its trials'
    stages summed, setup and re-measure as timed, the rest of the wall time idle or overhead."""
    since = float(record.get("started_at") or 0.0)
    ran = [t for t in trials if t.started_at is not None and t.started_at >= since and t.seconds is not None]
    parts = dict.fromkeys(CATEGORIES, 0.0)
    parts["setup"] = float(record.get("setup_s") or 0.0)
    parts["re-measure"] = float(record.get("remeasure_s") or 0.0)
    for t in ran:
        for k, v in spent(t).items():
            parts[k] += v
    wall = float(record.get("wall_s") or 0.0)
    parts["overhead"] += max(0.0, wall - sum(parts.values()))
    skipped = sum(t.budget_skip for t in ran)
    return {
        "budget_s": record.get("budget_s"),
        "wall_s": wall,
        "parts": parts,
        "trials": len(ran) - skipped,
        "skipped": skipped,
        "ended": record.get("ended") or "",
    }
