"""Trustworthy latency: re-measure a finished study's Pareto set (and its baseline) in fresh processes.

A study times each candidate once, in whatever state the machine and the worker process were in at
that moment. ``remeasure_pareto`` re-times every Pareto trial and the baseline again, each
measurement in a new spawned process (load workload -> build from the cache -> open the runtime ->
time the prepared real input; no accuracy pass), interleaved round-robin (A B C A B C ...) so that
slow drift of the machine hits every candidate alike. A round whose process never found the host quiet
(tuner.measure.host) is run once more at the end; per trial it keeps the median of the quiet rounds'
medians (of all rounds where none was quiet) and their min-max, compares them with the study's figure
and its 95% CI, stores the result on the trial (user attr ``remeasure``) and returns a typed summary.

Finished trials are read-only through Optuna's public API (``set_trial_user_attr`` raises
``UpdateFinishedTrialError``), so on an RDB storage the attribute is written through Optuna's own
table model; every storage also gets the whole result as the study user attr ``remeasure``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner.errors import ConfigError, MeasurementError
from tuner.measure.latency import LatencyPolicy
from tuner.workload import WorkloadSpec

ATTR = "remeasure"
WITHIN = 0.05  # "agrees" = the re-measured median is within 5% of the study's
WARMUP_SECONDS = 0.5  # the study's figure came after a whole accuracy pass: warm up for a while too
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
    stored: dict[int, str] = field(default_factory=dict)  # trial number -> "trial" | "study" (where the attr went)

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
        return {"rounds": self.rounds, "fraction_within_5pct": self.fraction_within_5pct,
                "fraction_outside_ci": self.fraction_outside_ci, "pareto_points": len(self.pareto_points),
                "quiet_points": len(self.quiet), "fraction_within_5pct_quiet": self.fraction_within_5pct_quiet,
                "hardware_matches": self.hardware_matches, "seconds": self.seconds,
                "trials": {str(e.number): e.to_dict() for e in self.entries}}


# ---------------------------------------------------------------- the parent: choose, interleave, compare, store


def remeasure_pareto(study: optuna.Study, cache_dir: str | None, rounds: int = 3,
                     log: Callable[[str], None] = print, *, policy: LatencyPolicy = LatencyPolicy(),
                     timeout: float = TIMEOUT_SECONDS) -> RemeasureSummary:
    """Re-time ``study.best_trials`` and the baseline in fresh processes, ``rounds`` interleaved rounds.

    ``cache_dir`` is the build cache the study used (``WorkloadSpec.cache_dir``, ``<studies-dir>/cache``),
    so that each process rebuilds from it in seconds. Stores ``remeasure`` on every trial it re-times.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ConfigError(f"rounds must be an integer >= 1, got {rounds!r}.")
    start = time.perf_counter()
    spec = _study_workload(study, cache_dir)
    trials = _chosen_trials(study, log)
    hardware_matches = _same_hardware(study, log)
    # One measurement per distinct candidate (duplicate trials share their figures).
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t.user_attrs["candidate"], sort_keys=True), []).append(t)
    if trials:
        log(f"re-measuring latency of {len(trials)} trials ({len(groups)} distinct builds: the Pareto set and the "
            f"baseline) in fresh processes, {rounds} interleaved rounds")
    results: dict[str, list[float]] = {k: [] for k in groups}
    contended: dict[str, list[bool]] = {k: [] for k in groups}  # per round: no quiet period came
    errors: dict[str, str] = {}
    full_speed = _study_full_speed(study)

    def measure(key: str, step: str) -> None:
        nonlocal full_speed
        if key in errors:
            return
        candidate = groups[key][0].user_attrs["candidate"]
        label = "/".join(f"#{t.number}" for t in groups[key])
        try:
            out = _in_fresh_process(spec, candidate, policy, timeout, full_speed)
        except MeasurementError as err:
            errors[key] = str(err)
            log(f"  {step} {label} {_what(candidate)}: failed: {err}")
            return
        results[key].append(out["median_ms"])
        contended[key].append(not out["quiet"])
        full_speed = min(filter(None, (full_speed, out["host_reference_ms"])), default=None)
        log(f"  {step} {label} {_what(candidate)}: {out['median_ms'] / candidate['batch_size']:.4f} ms/sample "
            f"(n={out['samples']}" + ("" if out["quiet"] else ", host contended throughout") + ")")

    for r in range(rounds):
        for key in groups:
            measure(key, f"round {r + 1}/{rounds}")
    # A round that never found the host quiet timed the neighbours' load too: once more per such round, now
    # that time has passed (interleaved again); an entry's figure then comes from its quiet rounds.
    again = {key: sum(flags) for key, flags in contended.items()}
    for i in range(max(again.values(), default=0)):
        for key in groups:
            if again[key] > i:
                measure(key, f"again {i + 1} (a contended round)")

    pareto = {t.number for t in study.best_trials}
    entries = []
    for key, group in groups.items():
        for t in group:
            entries.append(_entry(t, t.number in pareto, results[key], contended[key], errors.get(key)))
    entries.sort(key=lambda e: e.number)
    summary = RemeasureSummary(rounds, tuple(entries), None, hardware_matches, time.perf_counter() - start)
    points = summary.pareto_points
    fraction = sum(bool(e.within_5pct) for e in points) / len(points) if points else None
    stored = _store(study, dataclasses.replace(summary, fraction_within_5pct=fraction), {t.number: t for t in trials})
    summary = dataclasses.replace(summary, fraction_within_5pct=fraction, stored=stored)
    if fraction is not None:
        log(f"re-measured {len(summary.measured)} points in {summary.seconds:.0f} s: {fraction:.0%} of the "
            f"{len(points)} Pareto points within 5% of the study's figure, {summary.fraction_outside_ci:.0%} outside "
            f"its 95% CI")
    return summary


def _study_workload(study: optuna.Study, cache_dir: str | None) -> WorkloadSpec:
    attrs = study.user_attrs.get("workload")
    if not isinstance(attrs, dict):
        raise ConfigError(f"study {study.study_name} records no workload; was it created by `tuner run`?")
    known = {f.name for f in dataclasses.fields(WorkloadSpec)} - {"cache_dir"}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in attrs.items() if k in known}  # JSON lists
    return WorkloadSpec(**kwargs, cache_dir=cache_dir)


def _chosen_trials(study: optuna.Study, log: Callable[[str], None]) -> list[FrozenTrial]:
    """The baseline (first COMPLETE trial marked baseline) and the Pareto set, by number, each once."""
    chosen: dict[int, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("baseline"):
            chosen[t.number] = t
            break
    for t in study.best_trials:
        chosen.setdefault(t.number, t)
    usable = []
    for number in sorted(chosen):
        t = chosen[number]
        if isinstance(t.user_attrs.get("candidate"), dict) and isinstance(t.user_attrs.get("metrics"), dict):
            usable.append(t)
        else:
            log(f"  #{number} records no candidate or metrics: not re-measured")
    return usable


def _same_hardware(study: optuna.Study, log: Callable[[str], None]) -> bool:
    from tuner import hardware

    theirs = study.user_attrs.get("fingerprint")
    if theirs is None or theirs == hardware.fingerprint():
        return True
    log("  note: the study ran on other hardware; its latencies are shown, but the comparison means little")
    return False


def _study_full_speed(study: optuna.Study) -> float | None:
    """The fastest host-probe canary the study's workers saw: full speed, for the fresh processes to start from."""
    seen = [(t.user_attrs.get("metrics") or {}).get("host_reference_ms") for t in study.get_trials(deepcopy=False)]
    return min((float(x) for x in seen if isinstance(x, (int, float)) and x > 0), default=None)


def _entry(t: FrozenTrial, pareto: bool, round_ms: list[float], contended: list[bool],
           error: str | None) -> RemeasureEntry:
    m = t.user_attrs["metrics"]
    study_ms = float(m["latency_ms"])
    lo, hi = (float(x) for x in m.get("latency_ci_ms", (study_ms, study_ms)))
    base = dict(number=t.number, baseline=bool(t.user_attrs.get("baseline")), pareto=pareto,
                candidate=dict(t.user_attrs["candidate"]), study_ms=study_ms, study_ci_ms=(lo, hi),
                round_ms=tuple(round_ms), study_quiet=bool(m.get("latency_quiet", True)))
    if not round_ms:
        return RemeasureEntry(**base, error=error or "not measured")
    quiet = [ms for ms, busy in zip(round_ms, contended) if not busy]
    used = quiet or round_ms  # the quiet rounds; all of them where none was quiet
    median = _median(used)
    rel = (median - study_ms) / study_ms
    return RemeasureEntry(**base, median_ms=median, min_ms=min(used), max_ms=max(used), rel_diff=rel,
                          rounds_used=len(used), contended_rounds=0 if quiet else len(used),
                          outside_ci=not lo <= median <= hi, within_5pct=abs(rel) <= WITHIN,
                          error=error)  # an error after some rounds: the figures cover the rounds that ran


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _what(c: dict[str, Any]) -> str:
    return f"{c.get('placement')} {c.get('precision')} prune {c.get('prune_ratio', 0):.2f} bs {c.get('batch_size')}"


# ---------------------------------------------------------------- storing on finished trials


def _store(study: optuna.Study, summary: RemeasureSummary, trials: dict[int, FrozenTrial]) -> dict[int, str]:
    """Write ``remeasure`` on each trial where the storage allows it, and the whole result on the study.

    Returns trial number -> "trial" (readable as ``trial.user_attrs["remeasure"]`` after load_study)
    or "study" (only under ``study.user_attrs["remeasure"]["trials"]``, e.g. on a journal storage).
    """
    where = {}
    for e in summary.entries:
        value = {**e.to_dict(), "rounds": summary.rounds, "hardware_matches": summary.hardware_matches,
                 "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        where[e.number] = "trial" if set_finished_trial_user_attr(study, trials[e.number], ATTR, value) else "study"
    study.set_user_attr(ATTR, summary.to_dict())
    return where


def remeasured_trials(study: optuna.Study) -> dict[int, dict[str, Any]]:
    """Trial number -> its stored re-measure (``RemeasureEntry.to_dict()``) where it holds a figure: from the
    trial itself, or from the study's summary on a storage that cannot annotate finished trials."""
    kept = (study.user_attrs.get(ATTR) or {}).get("trials") or {}
    found = {int(n): e for n, e in kept.items() if isinstance(e, dict)}
    for t in study.get_trials(deepcopy=False):
        if isinstance(t.user_attrs.get(ATTR), dict):
            found[t.number] = t.user_attrs[ATTR]
    return {n: e for n, e in found.items() if isinstance(e.get("per_sample_ms"), (int, float))}


def set_finished_trial_user_attr(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> bool:
    """Set a user attr on a trial even when it has finished; False when this storage cannot persist it.

    Optuna refuses to update finished trials (``UpdateFinishedTrialError``), so on an ``RDBStorage``
    (wrapped or not in Optuna's cache) the row is upserted through Optuna's own table model. The
    in-process copy (the cached or in-memory FrozenTrial) is updated too, so that this ``study``
    object sees the attribute without being loaded again.
    """
    storage = study._storage  # noqa: SLF001 - Optuna has no public way to annotate a finished trial
    value = json.loads(json.dumps(value))  # what a reload gives back (tuples -> lists); fails early if not JSON
    persisted = False
    try:
        storage.set_trial_user_attr(trial._trial_id, key, value)  # noqa: SLF001 - works where allowed
        persisted = True
    except optuna.exceptions.UpdateFinishedTrialError:
        backend = getattr(storage, "_backend", storage)
        if isinstance(backend, optuna.storages.RDBStorage):
            _rdb_upsert_user_attr(backend, trial._trial_id, key, value)  # noqa: SLF001
            persisted = True
        elif isinstance(backend, optuna.storages.InMemoryStorage):
            persisted = True  # the in-process copy below is the storage
    if persisted:
        try:
            storage.get_trial(trial._trial_id).user_attrs[key] = value  # noqa: SLF001 - the cached object
        except Exception:  # noqa: BLE001 - only a convenience for this process; the row is written
            pass
        trial.user_attrs[key] = value
    return persisted


def _rdb_upsert_user_attr(backend: optuna.storages.RDBStorage, trial_id: int, key: str, value: Any) -> None:
    from optuna.storages._rdb import models

    session = backend.scoped_session()
    try:
        row = models.TrialModel.find_or_raise_by_id(trial_id, session)
        attr = models.TrialUserAttributeModel.find_by_trial_and_key(row, key, session)
        if attr is None:
            session.add(models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=json.dumps(value)))
        else:
            attr.value_json = json.dumps(value)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# ---------------------------------------------------------------- one measurement, in a fresh process
#
# Each measurement is `python -m tuner.remeasure` (a new interpreter: nothing inherited, not even the
# caller's main module, which a multiprocessing "spawn" child would import again). The job goes in as
# JSON on stdin; the result comes back as the one JSON line on stdout (the child sends everything else
# it or its libraries print to stderr, which the parent keeps for the error message).


def _in_fresh_process(spec: WorkloadSpec, candidate: dict[str, Any], policy: LatencyPolicy,
                      timeout: float, full_speed_ms: float | None = None) -> dict[str, Any]:
    """Run one measurement in a new interpreter, and end it whatever happens (timeout, Ctrl-C).

    ``full_speed_ms``: the host probe's full-speed canary time seen by earlier processes, so that a process
    starting while the host is contended does not take that for full speed.
    """
    import subprocess
    from pathlib import Path

    job = {"spec": dataclasses.asdict(spec), "candidate": candidate, "policy": dataclasses.asdict(policy),
           "sys_path": [p for p in sys.path if p], "full_speed_ms": full_speed_ms}
    root = str(Path(__file__).resolve().parent.parent)  # the very `tuner` this process runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen([sys.executable, "-m", "tuner.remeasure"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # the terminal's Ctrl-C is the parent's alone
    try:
        out, err = proc.communicate(json.dumps(job), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"no result within {timeout:.0f} s") from None
    finally:
        if proc.poll() is None:  # timed out, or the parent is being interrupted
            proc.kill()
            proc.communicate()
    lines = out.strip().splitlines()
    if proc.returncode == 0 and lines:
        result = json.loads(lines[-1])
        if result.get("ok"):
            return result
        raise MeasurementError(result.get("error") or "unknown error")
    last = next((line.strip() for line in reversed(err.splitlines()) if line.strip()), "")
    raise MeasurementError(_death(proc.returncode) + (f": {last[:200]}" if last else ""))


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the measuring process was killed by {name}" + (" (likely out of memory)" if name == "SIGKILL" else "")
    return f"the measuring process died (exit code {code})"


def _child_main() -> int:
    """``python -m tuner.remeasure``: one job from stdin, one JSON line on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    result_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed while working (Python or C level) goes to stderr
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]  # e.g. the caller's cwd for module:callable
    spec = WorkloadSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})
    try:
        result = {"ok": True, **_time_latency(spec, job["candidate"], LatencyPolicy(**job["policy"]),
                                              job.get("full_speed_ms"))}
    except Exception as err:  # noqa: BLE001 - reported to the parent as this trial's error
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        result = {"ok": False, "error": f"{type(err).__name__}: {first}" if first else type(err).__name__}
    with os.fdopen(result_fd, "w") as out:
        out.write(json.dumps(result) + "\n")
    return 0


def _die_with_parent() -> None:
    """If the parent is killed (kill -9), end too instead of burning the cores others measure on."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:
        os._exit(1)


def _time_latency(spec: WorkloadSpec, candidate: dict[str, Any], policy: LatencyPolicy,
                  full_speed_ms: float | None = None) -> dict[str, Any]:
    """Load the workload, build the candidate (from the cache), time ``session.run`` on a prepared real batch."""
    from tuner import runtimes
    from tuner.build import build
    from tuner.candidate import Candidate
    from tuner.measure import host, resolve_threads
    from tuner.measure.latency import time_calls
    from tuner.workload import load_workload

    host.remember(full_speed_ms)

    workload = load_workload(spec, log=lambda message: None)
    c = Candidate(**candidate)
    built = build(workload, c)
    threads = resolve_threads(c.threads)
    session = runtimes.PLACEMENTS[c.placement].open(built.model, built.onnx_path, c.precision, c.graph_opt, threads)
    try:
        prepared = session.prepare(workload.data.example(c.batch_size))  # real images, outside the timed loop
        end = time.perf_counter() + WARMUP_SECONDS  # stands in for the study's accuracy pass before timing
        while time.perf_counter() < end:
            session.run(prepared)
        lat = time_calls(session.run, prepared, policy, threads=threads)
    finally:
        session.close()
    return {"median_ms": lat.median_ms, "ci_ms": [lat.ci_low_ms, lat.ci_high_ms], "samples": lat.samples,
            "quiet": lat.quiet, "contended_share": lat.contended_share, "host_reference_ms": host.reference_ms(),
            "pid": os.getpid()}


# ---------------------------------------------------------------- text


def format_remeasure(summary: RemeasureSummary) -> str:
    """The re-measurement as a table: one row per trial, then the share that agrees within 5%."""
    rows = [("trial", "placement/precision/bs", "study ms/sample", "re-measured ms/sample (min-max)", "diff %",
             "flag")]
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    head = (f"Latency re-measured in fresh processes ({summary.rounds} interleaved rounds, a contended one run again; "
            "median of the quiet rounds' medians"
            + ("" if summary.hardware_matches else "; NOTE: the study ran on other hardware") + "):")
    if summary.fraction_within_5pct is None:
        tail = "no Pareto point could be re-measured"
    else:
        n = len(summary.pareto_points)
        tail = (f"{round(summary.fraction_within_5pct * n)} of {n} Pareto points within 5% of the study's figure "
                f"({summary.fraction_within_5pct:.0%}); {summary.fraction_outside_ci:.0%} outside the study's 95% CI")
        if len(summary.quiet) < n:
            q = summary.quiet
            tail += (f"\n{len(q)} of {n} timed on a quiet host (the study and the rounds used)" + (
                f", {round(summary.fraction_within_5pct_quiet * len(q))} of them within 5%" if q else "")
                + " (the host was contended by other tenants during the rest; see tuner/measure/host.py)")
    return "\n".join([head, *lines, tail])


if __name__ == "__main__":
    sys.exit(_child_main())
