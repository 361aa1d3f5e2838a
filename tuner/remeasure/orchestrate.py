"""Trustworthy latency: re-measure a finished study's Pareto set (and its baseline) in fresh processes.

This module orchestrates (choose, interleave, compare, keep the record on the study); ``runner`` is one
measurement in a fresh interpreter.

A study times each candidate once, in whatever state the machine and the worker process were in at
that moment. ``remeasure_pareto`` re-times every Pareto trial and the baseline again, each
measurement in a new spawned process (load workload -> build from the cache -> open the runtime ->
time the prepared real input; no accuracy pass), interleaved round-robin (A B C A B C ...) so that
slow drift of the machine hits every candidate alike. A round whose process never found the host quiet
(tuner.measure.host) is run once more at the end; per trial it keeps the median of the quiet rounds'
medians (of all rounds where none was quiet) and their min-max, compares them with the study's figure
and its 95% CI, stores the result on the trial (user attr ``remeasure``) and returns a typed summary.

Finished trials are read-only through Optuna's public API, so the result is kept on the study
(``tuner.study.storage.write_remeasure``), per trial number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import optuna

from tuner import results
from tuner.candidate import label as candidate_label
from tuner.errors import ConfigError, MeasurementError
from tuner.measure.latency import LatencyPolicy
from tuner.measure.load import replaying
from tuner.names import LOAD_METRICS
from tuner.record import TrialRecord, read_study, read_trials
from tuner.remeasure.runner import measure_in_fresh_process
from tuner.study.storage import write_remeasure
from tuner.table import aligned
from tuner.workload_spec import WorkloadSpec

_log = logging.getLogger(__name__)

WITHIN = 0.05  # "agrees" = the re-measured median is within 5% of the study's
LOAD_WITHIN = 0.10  # a figure under load "agrees" within 10%: a p95 over a few thousand requests moves more
TIMEOUT_SECONDS = 600.0  # one measurement (load + build from cache + timing) in its fresh process


@dataclass(frozen=True)
class RemeasureEntry:
    """One trial re-measured; latencies are per batch (``*_per_sample_ms`` divide by the batch size)."""

    number: int
    baseline: bool
    pareto: bool
    candidate: dict[str, Any]
    study_ms: float  # the study's median per batch
    study_ci_ms: tuple[float, float]  # the study's 95% CI of that median
    round_ms: tuple[float, ...] = ()  # this run: the median of each round, in order (contended ones run again)
    median_ms: float | None = None  # median of the quiet rounds' medians (of all rounds where none was quiet)
    min_ms: float | None = None  # min / max across those rounds
    max_ms: float | None = None
    rel_diff: float | None = None  # (median_ms - study_ms) / study_ms
    outside_ci: bool | None = None  # the re-measured median is outside the study's 95% CI
    within_5pct: bool | None = None
    error: str | None = None  # why this trial could not be re-measured
    study_quiet: bool = True  # False: the study's figure was timed on a contended host (tuner.measure.host)
    contended_rounds: int = 0  # rounds behind median_ms that found no quiet period (figures include contention)
    rounds_used: int = 0  # rounds behind median_ms: the quiet ones, or all where none was quiet
    # Studies under load: per load metric {"study", "rounds" (one per round), "median", "rel_diff", "within_10pct"},
    # each round under the load the study applied (``tuner.measure.load.replaying``: the same rule, fresh figures).
    load: dict[str, dict[str, Any]] | None = None

    @property
    def batch_size(self) -> int:
        return int(self.candidate.get("batch_size", 1))

    @property
    def study_per_sample_ms(self) -> float:
        return self.study_ms / self.batch_size

    @property
    def per_sample_ms(self) -> float | None:
        return None if self.median_ms is None else self.median_ms / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["study_ci_ms"] = list(self.study_ci_ms)
        d["round_ms"] = list(self.round_ms)
        d["per_sample_ms"] = self.per_sample_ms
        d["study_per_sample_ms"] = self.study_per_sample_ms
        return d


@dataclass(frozen=True)
class RemeasureSummary:
    rounds: int
    entries: tuple[RemeasureEntry, ...]  # by trial number
    fraction_within_5pct: float | None  # over the distinct Pareto points re-measured; None when none was
    hardware_matches: bool  # False: the study ran on other hardware, the comparison means little
    seconds: float  # wall time of the whole re-measurement

    @property
    def measured(self) -> tuple[RemeasureEntry, ...]:
        """The points re-measured: one entry per distinct candidate (a duplicate trial repeats its figures)."""
        return tuple(group[0] for group in self._points())

    @property
    def pareto_points(self) -> tuple[RemeasureEntry, ...]:
        """The measured points on the Pareto front: what the agreement figures are about. The baseline is
        re-timed for the speedups; it counts here only where it is on the front itself."""
        return tuple(group[0] for group in self._points() if any(e.pareto for e in group))

    def _points(self) -> list[list[RemeasureEntry]]:
        groups: dict[str, list[RemeasureEntry]] = {}
        for e in self.entries:
            if e.median_ms is not None:
                groups.setdefault(json.dumps(e.candidate, sort_keys=True), []).append(e)
        return list(groups.values())

    @property
    def fraction_outside_ci(self) -> float | None:
        m = self.pareto_points
        return sum(bool(e.outside_ci) for e in m) / len(m) if m else None

    @property
    def quiet(self) -> tuple[RemeasureEntry, ...]:
        """The Pareto points whose figures both come from quiet timings (the study's, and the rounds used)."""
        return tuple(e for e in self.pareto_points if e.study_quiet and not e.contended_rounds)

    @property
    def fraction_within_5pct_quiet(self) -> float | None:
        q = self.quiet
        return sum(bool(e.within_5pct) for e in q) / len(q) if q else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "fraction_within_5pct": self.fraction_within_5pct,
            "fraction_outside_ci": self.fraction_outside_ci,
            "pareto_points": len(self.pareto_points),
            "quiet_points": len(self.quiet),
            "fraction_within_5pct_quiet": self.fraction_within_5pct_quiet,
            "hardware_matches": self.hardware_matches,
            "seconds": self.seconds,
            "trials": {str(e.number): e.to_dict() for e in self.entries},
        }


# ---------------------------------------------------------------- the parent: choose, interleave, compare, store


def remeasure_pareto(
    study: optuna.Study,
    cache_dir: str | None,
    rounds: int = 3,
    *,
    policy: LatencyPolicy = LatencyPolicy(),
    timeout: float = TIMEOUT_SECONDS,
    deadline: float | None = None,
) -> RemeasureSummary:
    """Re-time the study's front (``results.front``) and the baseline in fresh processes, ``rounds`` interleaved rounds.

    ``cache_dir`` is the build cache the study used (``WorkloadSpec.cache_dir``, ``<studies-dir>/cache``),
    so that each process rebuilds from it in seconds. Keeps the result on the study (``write_remeasure``).
    ``deadline`` (``time.monotonic()``, the time budget's end): a contended round is run again only while the
    longest measurement so far still fits before it, and no measurement runs past it.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}.")
    start = time.perf_counter()
    spec = WorkloadSpec.from_record(read_study(study).workload, cache_dir, f"study {study.study_name}")
    trials = _chosen_trials(study)
    hardware_matches = _same_hardware(study)
    # One measurement per distinct candidate (duplicate trials share their figures).
    groups: dict[str, list[TrialRecord]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t.candidate, sort_keys=True), []).append(t)
    if trials:
        _log.info(
            f"re-measuring latency of {len(trials)} trials ({len(groups)} distinct builds: the Pareto set and the "
            f"baseline) in fresh processes, {rounds} interleaved rounds"
        )
    timings: dict[str, list[float]] = {k: [] for k in groups}
    loads: dict[str, list[dict[str, Any]]] = {k: [] for k in groups}  # per round: the load figures
    contended: dict[str, list[bool]] = {k: [] for k in groups}  # per round: no quiet period came
    errors: dict[str, str] = {}
    full_speed = _study_full_speed(study)
    longest = 0.0  # the longest measurement so far: what one more must fit before the deadline

    def measure(key: str, step: str) -> None:
        nonlocal full_speed, longest
        if key in errors:
            return
        left = math.inf if deadline is None else deadline - time.monotonic()
        if left <= 0 and timings[key]:  # out of budget: the rounds already run stand
            return
        first = groups[key][0]
        assert first.candidate is not None and first.metrics is not None
        candidate = first.candidate
        label = "/".join(f"#{t.number}" for t in groups[key])
        began = time.monotonic()
        try:
            out = measure_in_fresh_process(
                spec, candidate, policy, min(timeout, max(1.0, left)), full_speed, replaying(first.metrics)
            )
        except MeasurementError as err:
            errors[key] = str(err)
            _log.info(f"  {step} {label} {candidate_label(candidate)}: failed: {err}")
            return
        longest = max(longest, time.monotonic() - began)
        timings[key].append(out["median_ms"])
        contended[key].append(not out["quiet"])
        if out.get("load"):
            loads[key].append({**{m: out[m] for m in LOAD_METRICS}, "quiet": out["load"]["quiet"]})
        full_speed = min(filter(None, (full_speed, out["host_reference_ms"])), default=None)
        _log.info(
            f"  {step} {label} {candidate_label(candidate)}: {out['median_ms'] / candidate['batch_size']:.4f} ms/sample "
            f"(n={out['samples']}"
            + ("" if out["quiet"] else ", host contended throughout")
            + ")"
            + (
                f"; under load {out['load_throughput']:.0f} samples/s p95 {out['load_p95_ms']:.3f} ms, open loop "
                f"{out['open_throughput']:.0f} samples/s p95 {out['open_p95_ms']:.3f} ms"
                if out.get("load")
                else ""
            )
        )

    slowest_round = 0.0
    for r in range(rounds):
        began_round = time.monotonic()
        for key in groups:
            measure(key, f"round {r + 1}/{rounds}")
        slowest_round = max(slowest_round, time.monotonic() - began_round)
    # A round that never found the host quiet timed the neighbours' load too: once more per such round, now
    # that time has passed (interleaved again); an entry's figure then comes from its quiet rounds.
    again = {key: sum(flags) for key, flags in contended.items()}
    for i in range(max(again.values(), default=0)):
        for key in groups:
            if again[key] > i and (deadline is None or time.monotonic() + longest <= deadline):
                measure(key, f"again {i + 1} (a contended round)")
    # Under a budget, what its reserve kept and the rounds did not use buys more rounds (up to as many again):
    # tighter figures for the pick, and a run that ends when the user said rather than minutes early.
    extra = 0
    while deadline is not None and groups and extra < rounds and time.monotonic() + slowest_round <= deadline:
        extra += 1
        for key in groups:
            measure(key, f"extra round {extra} (the budget's time left)")

    pareto = {t.number for t in results.front(study)}
    entries = []
    for key, group in groups.items():
        for t in group:
            entries.append(
                dataclasses.replace(
                    _entry(t, t.number in pareto, timings[key], contended[key], errors.get(key)),
                    load=_load_entry(t, loads[key]),
                )
            )
    entries.sort(key=lambda e: e.number)
    summary = RemeasureSummary(rounds + extra, tuple(entries), None, hardware_matches, time.perf_counter() - start)
    points = summary.pareto_points
    fraction = sum(bool(e.within_5pct) for e in points) / len(points) if points else None
    summary = dataclasses.replace(summary, fraction_within_5pct=fraction)
    write_remeasure(study, {**summary.to_dict(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    if fraction is not None:
        _log.info(
            f"re-measured {len(summary.measured)} points in {summary.seconds:.0f} s: {fraction:.0%} of the "
            f"{len(points)} Pareto points within 5% of the study's figure, {summary.fraction_outside_ci:.0%} outside "
            f"its 95% CI"
        )
    return summary


def _chosen_trials(study: optuna.Study) -> list[TrialRecord]:
    """The baseline and the Pareto front, by number, each once."""
    base = results.baseline_trial(study)
    chosen: dict[int, TrialRecord] = {base.number: base} if base is not None else {}
    for t in results.front(study):
        chosen.setdefault(t.number, t)
    usable = []
    for number in sorted(chosen):
        t = chosen[number]
        if t.complete:
            usable.append(t)
        else:
            _log.info(f"  #{number} records no candidate or metrics: not re-measured")
    return usable


def _same_hardware(study: optuna.Study) -> bool:
    from tuner import hardware

    theirs = read_study(study).fingerprint
    if theirs is None or theirs == hardware.fingerprint():
        return True
    _log.info("  note: the study ran on other hardware; its latencies are shown, but the comparison means little")
    return False


def _study_full_speed(study: optuna.Study) -> float | None:
    """The fastest host-probe canary the study's workers saw: full speed, for the fresh processes to start from."""
    seen = [(t.metrics or {}).get("host_reference_ms") for t in read_trials(study)]
    return min((float(x) for x in seen if isinstance(x, (int, float)) and x > 0), default=None)


def _entry(
    t: TrialRecord, pareto: bool, round_ms: list[float], contended: list[bool], error: str | None
) -> RemeasureEntry:
    m = t.metrics or {}
    study_ms = float(m["latency_ms"])
    lo, hi = (float(x) for x in m.get("latency_ci_ms", (study_ms, study_ms)))
    base = dict(
        number=t.number,
        baseline=t.baseline,
        pareto=pareto,
        candidate=dict(t.candidate or {}),
        study_ms=study_ms,
        study_ci_ms=(lo, hi),
        round_ms=tuple(round_ms),
        study_quiet=bool(m.get("latency_quiet", True)),
    )
    if not round_ms:
        return RemeasureEntry(**base, error=error or "not measured")
    quiet = [ms for ms, busy in zip(round_ms, contended) if not busy]
    used = quiet or round_ms  # the quiet rounds; all of them where none was quiet
    median = _median(used)
    rel = (median - study_ms) / study_ms
    return RemeasureEntry(
        **base,
        median_ms=median,
        min_ms=min(used),
        max_ms=max(used),
        rel_diff=rel,
        rounds_used=len(used),
        contended_rounds=0 if quiet else len(used),
        outside_ci=not lo <= median <= hi,
        within_5pct=abs(rel) <= WITHIN,
        error=error,
    )  # an error after some rounds: the figures cover the rounds that ran


def _load_entry(t: TrialRecord, rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Per load metric: the study's figure, each round's, their median and how far it is from the study's."""
    m = t.metrics or {}
    if not rounds or not isinstance(m.get("load"), dict):
        return None
    out = {}
    for metric in LOAD_METRICS:
        study, values = float(m[metric]), [float(r[metric]) for r in rounds]
        median = _median(values)
        rel = (median - study) / study if study else 0.0
        out[metric] = {
            "study": study,
            "rounds": values,
            "median": median,
            "rel_diff": rel,
            "within_10pct": abs(rel) <= LOAD_WITHIN,
        }
    out["host"] = {"contended_rounds": sum(not r["quiet"] for r in rounds), "rounds": len(rounds)}
    return out


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


# ---------------------------------------------------------------- text


def format_remeasure(summary: RemeasureSummary) -> str:
    """The re-measurement as a table: one row per trial, then the share that agrees within 5%."""
    rows = [("trial", "placement/precision/bs", "study ms/sample", "re-measured ms/sample (min-max)", "diff %", "flag")]
    for e in summary.entries:
        bs = e.batch_size
        c = e.candidate
        tag = f"#{e.number}" + (" base" if e.baseline else "") + ("" if e.pareto else " (not Pareto)")
        what = f"{c.get('placement')}/{c.get('precision')}/{bs}"
        study = f"{e.study_per_sample_ms:.4f}"
        if e.median_ms is None:
            rows.append((tag, what, study, "-", "-", f"error: {e.error}"[:80]))
            continue
        now = f"{e.median_ms / bs:.4f} ({e.min_ms / bs:.4f}-{e.max_ms / bs:.4f})"  # type: ignore[operator]
        flags = [] if e.within_5pct else [">5% off"]
        if e.outside_ci:
            flags.append("outside CI")
        if e.error:
            flags.append(f"{len(e.round_ms)}/{summary.rounds} rounds")
        if not e.study_quiet:
            flags.append("study timed on a contended host")
        if e.contended_rounds:
            flags.append(f"{e.contended_rounds} contended rounds")
        diff = f"{100 * e.rel_diff:+.1f}"  # type: ignore[operator]
        rows.append((tag, what, study, now, diff, ", ".join(flags) or "ok"))
    lines = aligned(rows) + _load_lines(summary)
    head = (
        f"Latency re-measured in fresh processes ({summary.rounds} interleaved rounds, a contended one run again; "
        "median of the quiet rounds' medians"
        + ("" if summary.hardware_matches else "; NOTE: the study ran on other hardware")
        + "):"
    )
    if summary.fraction_within_5pct is None:
        tail = "no Pareto point could be re-measured"
    else:
        n = len(summary.pareto_points)
        tail = (
            f"{round(summary.fraction_within_5pct * n)} of {n} Pareto points within 5% of the study's figure "
            f"({summary.fraction_within_5pct:.0%}); {summary.fraction_outside_ci:.0%} outside the study's 95% CI"
        )
        if len(summary.quiet) < n:
            q = summary.quiet
            tail += (
                f"\n{len(q)} of {n} timed on a quiet host (the study and the rounds used)"
                + (f", {round(summary.fraction_within_5pct_quiet * len(q))} of them within 5%" if q else "")
                + " (the host was contended by other tenants during the rest; see tuner/measure/host.py)"
            )
    return "\n".join([head, *lines, tail])


def _load_lines(summary: RemeasureSummary) -> list[str]:
    """Per point re-measured under load: the study's and the re-measured (median) figures of each loop."""
    lines = []
    for e in summary.measured:
        if not e.load:
            continue
        parts = [
            f"{what} {e.load[m]['study']:{fmt}} -> {e.load[m]['median']:{fmt}} "
            f"({100 * e.load[m]['rel_diff']:+.1f}%" + ("" if e.load[m]["within_10pct"] else ", >10% off") + ")"
            for m, what, fmt in (
                ("load_throughput", "samples/s", ".0f"),
                ("load_p95_ms", "p95 ms", ".3f"),
                ("open_throughput", "open loop samples/s", ".0f"),
                ("open_p95_ms", "p95 ms", ".3f"),
            )
        ]
        host = e.load["host"]
        lines.append(
            f"  #{e.number} under load, median of {host['rounds']} rounds: "
            + ", ".join(parts)
            + (f"; {host['contended_rounds']} rounds on a contended host" if host["contended_rounds"] else "")
        )
    return ["Under load (closed loop, then the open loop at the study's share of its rate):", *lines] if lines else []
