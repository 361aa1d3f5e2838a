"""Trustworthy latency: re-measure a finished study's Pareto set (and its baseline) in fresh processes.

This module orchestrates (choose, interleave, compare, keep the record on the study); ``runner`` is one
measurement in a fresh interpreter, ``outcome`` the typed result, ``text`` its table.

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
from typing import Any

import optuna

from tuner import results
from tuner.candidate import label as candidate_label
from tuner.errors import ConfigError, MeasurementError
from tuner.measure.latency import LatencyPolicy
from tuner.measure.load import replaying
from tuner.names import LOAD_METRICS
from tuner.record import TrialRecord, read_study, read_trials
from tuner.remeasure.outcome import RemeasureSummary, entry_from_rounds, load_from_rounds
from tuner.remeasure.runner import measure_in_fresh_process
from tuner.study.storage import write_remeasure
from tuner.workload_spec import WorkloadSpec

_log = logging.getLogger(__name__)


TIMEOUT_SECONDS = 600.0  # one measurement (load + build from cache + timing) in its fresh process


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
                    entry_from_rounds(t, t.number in pareto, timings[key], contended[key], errors.get(key)),
                    load=load_from_rounds(t, loads[key]),
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
