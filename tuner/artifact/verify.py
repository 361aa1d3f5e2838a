"""Verify an export: reload its native artifact in its runtime (the OpenVINO IR with its recorded compile config,
the ONNX file, the torch.export program or the rebuilt module) through the same path a trial measures by
(``tuner.measure.open_session`` / ``time_session``), after checking the sha256 of every model file (a damaged
export is refused first), re-measure accuracy and latency on the same data, and compare both with ``config.yaml``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner import hardware
from tuner.artifact.check import Check, settings_text
from tuner.artifact.export import read_config_file
from tuner.artifact.kinds import registry
from tuner.cache import sha256_file
from tuner.candidate import Candidate
from tuner.defaults import DEFAULTS
from tuner.errors import ConfigError, TunerError
from tuner.metric import top1_of
from tuner.names import CONFIG_FILE, EXPORT_FORMAT
from tuner.table import aligned

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built

LATENCY_TOLERANCE = DEFAULTS.latency_tolerance  # latency reproduces within the recorded 95% CI or this share
LATENCY_ATTEMPTS = 3  # a latency outside tolerance is re-timed (a neighbour's burst is not a regression)


def read_config(directory: str | Path) -> dict[str, Any]:
    """An export's config.yaml, checked to be complete; ConfigError (exit 2: cannot verify) otherwise."""
    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise ConfigError(f"{d} has no {CONFIG_FILE}; pass a directory written by `tuner export`.")
    try:
        config = read_config_file(d / CONFIG_FILE)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one line
        raise ConfigError(f"{d / CONFIG_FILE} is not readable YAML ({type(err).__name__}).") from None
    if config.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{d / CONFIG_FILE} is not a {EXPORT_FORMAT} export (format {config.get('format')!r}).")
    missing = [
        k for k in ("candidate", "artifact", "metrics", "workload", "data") if not isinstance(config.get(k), dict)
    ]
    if missing or not isinstance(config["metrics"].get("export"), dict):
        raise ConfigError(
            f"{d / CONFIG_FILE} is incomplete (no {', '.join(missing) or 'metrics.export'}); export again."
        )
    check_files(d, config["artifact"])
    return config


def recorded_digests(artifact: dict[str, Any]) -> dict[str, str]:
    """{file name: sha256} of every model file config.yaml records (older exports: the artifact's alone)."""
    files = artifact.get("files")
    return (
        {str(k): str(v) for k, v in files.items()}
        if isinstance(files, dict) and files
        else {str(artifact.get("file")): str(artifact.get("sha256"))}
    )


def check_files(d: Path, artifact: dict[str, Any]) -> None:
    """Every model file of the export as config.yaml recorded it (its sha256), before anything loads one: a
    truncated, changed or missing file is a damaged export (exit 2), not a model that fails to reproduce."""
    for name, want in recorded_digests(artifact).items():
        path = d / name
        if not path.is_file():
            raise ConfigError(f"{d} is damaged: its {name} is missing; export again (`tuner export ... --out {d}`).")
        try:
            digest, size = sha256_file(path), path.stat().st_size
        except OSError as err:
            raise ConfigError(f"{d} cannot be verified: {name} is not readable ({err.strerror}).") from None
        if digest != want:
            was = (
                f", {artifact['bytes']} when exported" if name == artifact.get("file") and artifact.get("bytes") else ""
            )
            raise ConfigError(
                f"{d} is damaged: {name} ({size} bytes{was}) does not match the sha256 {CONFIG_FILE} "
                f"records; export again (`tuner export ... --out {d}`)."
            )


def load_built(directory: Path, config: dict[str, Any], data: Dataset) -> Built:
    """The exported artifact as a ``Built`` (what ``measure`` opens), loaded by its kind
    (``tuner.artifact.kinds.registry``)."""
    c = Candidate.from_dict(config["candidate"], source=str(directory / CONFIG_FILE))
    kind = registry.get(config["artifact"]["kind"], str(directory / CONFIG_FILE))
    return kind.load(directory, config, c, data)


def latency_reproduces(
    now_ms: float,
    recorded_ms: float,
    ci: tuple[float, float],
    tolerance: float = LATENCY_TOLERANCE,
    seen: tuple[float, float] | None = None,
) -> bool:
    """A re-timed median reproduces when it falls in the recorded 95% CI or within ``tolerance`` of the median,
    or, where the export recorded figures that disagree (``seen``: the range of the study's, the re-measure's
    and the export's own), within ``tolerance`` of that range."""
    if ci[0] <= now_ms <= ci[1] or abs(now_ms - recorded_ms) <= tolerance * recorded_ms:
        return True
    return seen is not None and seen[0] * (1 - tolerance) <= now_ms <= seen[1] * (1 + tolerance)


def verify(directory: str | Path, latency_tolerance: float = LATENCY_TOLERANCE) -> tuple[bool, list[Check]]:
    """Re-measure an export; (reproduces?, the checks behind the answer). A damaged export, or an error of its
    runtime or its data while re-measuring, raises a TunerError ("cannot verify", exit 2): False means only that
    the export ran and did not reproduce."""
    try:
        return _verify(directory, latency_tolerance)
    except TunerError:
        raise
    except MemoryError:
        raise TunerError(f"cannot verify {directory}: out of memory while re-measuring it.") from None
    except Exception as err:  # noqa: BLE001 - a runtime, a loader or a malformed config.yaml: one line, not a trace
        text = " ".join(str(err).split())[:200]
        raise TunerError(f"cannot verify {directory}: {type(err).__name__}" + (f": {text}" if text else "")) from None


def _verify(directory: str | Path, latency_tolerance: float) -> tuple[bool, list[Check]]:
    from tuner.data import load_dataset
    from tuner.measure import host, open_session, resolve_threads, serve_session, time_session
    from tuner.measure.accuracy import top1
    from tuner.runtimes.registry import check_supported

    d = Path(directory)
    config = read_config(d)
    c = Candidate.from_dict(config["candidate"], source=str(d / CONFIG_FILE))
    check_supported(c)  # cannot run here: say so (exit 2), do not call it "not reproduced"
    art, rec = config["artifact"], config["metrics"]["export"]
    checks: list[Check] = []
    for name, digest in recorded_digests(art).items():  # read_config compared them: shown, all equal
        checks.append(
            Check("artifact sha256" if name == art["file"] else f"sha256 {name}", digest[:16], digest[:16], True)
        )

    w = config["workload"]
    # The resolution the data was measured at: the study's own setting may be None where an ONNX file set it.
    # The study's decoded images where this machine has them (they are keyed by content: another machine's path
    # that happens to exist is no risk); else decoded here into memory.
    cache = config["data"].get("cache")
    data = load_dataset(
        w["data"],
        config["data"].get("resolution") or w.get("resolution"),
        tuple(w["mean"]) if w.get("mean") else None,
        tuple(w["std"]) if w.get("std") else None,
        int(w.get("seed", 0)),
        Path(cache) if isinstance(cache, str) and Path(cache).is_dir() else None,
        float(w.get("holdout", 0.0)),
    )
    want = config["data"]
    checks.append(
        Check(
            "data",
            f"{want['name']} {want['fingerprint']}",
            f"{data.name} {data.fingerprint}",
            data.fingerprint == want["fingerprint"] and len(data.val) == want["validation_images"],
        )
    )

    same_machine = hardware.fingerprint_id(config.get("hardware") or {}) == hardware.fingerprint_id()
    if same_machine:
        host.remember(rec.get("host_reference_ms"))  # full speed as the export saw it (a quiet-host reference)
    threads = resolve_threads(c.threads, c.streams)
    _log.info(
        f"verifying {d}: {art['kind']} on {c.placement}, batch {c.batch_size}, {threads} threads"
        + (f" x {c.streams} streams" if c.streams > 1 else "")
    )
    session = open_session(load_built(d, config, data))
    try:
        checks += registry.get(art["kind"]).verify(session, config, same_machine)  # the kind's own checks
        accuracy = top1(session, data, c.batch_size)
        tol = 1.0 / len(data.val)
        checks.append(
            Check(
                "accuracy",
                f"{top1_of(rec):.4%}",
                f"{accuracy:.4%}",
                abs(accuracy - top1_of(rec)) <= tol + 1e-9,
                f"within 1 of {len(data.val)} images ({100 * tol:.2f} points)",
            )
        )
        checks.append(
            Check(
                "executed precision",
                str(rec.get("executed_precision")),
                session.executed_precision,
                session.executed_precision == rec.get("executed_precision"),
            )
        )
        lo, hi = rec["latency_ci_ms"]
        median = rec["latency_ms"]
        trust = config.get("latency_trust") or {}
        seen = tuple(trust["range_ms"]) if trust.get("notes") and trust.get("range_ms") else None
        for note in trust.get("notes") or ():
            _log.info(f"note (recorded at export): {note}")
        missed_on_quiet = False  # an attempt on a quiet host came out outside: that one is evidence
        for attempt in range(1, LATENCY_ATTEMPTS + 1):
            stats = time_session(session, data, c.batch_size, threads)
            inside = latency_reproduces(stats.median_ms, median, (lo, hi), latency_tolerance, seen)
            missed_on_quiet |= not inside and stats.quiet
            if inside or not same_machine or attempt == LATENCY_ATTEMPTS:
                break
            _log.info(
                f"latency {stats.median_ms:.4f} ms/batch is outside {lo:.4f}-{hi:.4f} and "
                f"{latency_tolerance:.0%} of {median:.4f}; timing again ({attempt + 1}/{LATENCY_ATTEMPTS})"
            )
        serving = config.get("serving") or {}
        loaded = (
            _load_checks(
                lambda policy: serve_session(session, data, c, policy), serving, rec, same_machine, latency_tolerance
            )
            if serving.get("load")
            else []
        )
    finally:
        session.close()
    note = (
        f"within the 95% CI {lo:.4f}-{hi:.4f} or {latency_tolerance:.0%}"
        if same_machine
        else "not compared: exported on other hardware or libraries"
    )
    if same_machine and seen:
        note += f", or of the range {seen[0]:.4f}-{seen[1]:.4f} the export recorded (its figures disagreed)"
    if not stats.quiet:
        note += "; this timing never found the host quiet"
    if attempt > 1:
        note += f"; {attempt} timing runs"
    verdict = _verdict(inside, same_machine, missed_on_quiet)
    checks.append(
        Check(
            "latency ms/batch", f"{median:.4f}", f"{stats.median_ms:.4f}", verdict, _busy(note, verdict, same_machine)
        )
    )
    bs = c.batch_size
    checks.append(
        Check(
            "per sample ms",
            f"{median / bs:.4f}",
            f"{stats.median_ms / bs:.4f}",
            None,
            f"study recorded {config['metrics']['study']['per_sample_ms']:.4f}",
        )
    )
    checks += loaded
    ok = all(ch.ok is not False for ch in checks)
    return ok, checks


_LOAD_CHECKS = (
    ("load_throughput", "closed", "throughput", "samples/s under load"),
    ("load_p95_ms", "closed", "p95", "p95 ms under load"),
    ("open_p95_ms", "open", "p95", "p95 ms, open loop"),
)


def _load_checks(
    serve: Any, serving: dict[str, Any], rec: dict[str, Any], same_machine: bool, tolerance: float
) -> list[Check]:
    """The export's figures under load, re-measured under the same load (``replaying``: its requests in flight, then
    arrivals by the same rule): each within its recorded 95% CI or ``tolerance``; re-measured up to LATENCY_ATTEMPTS
    times."""
    from tuner.measure.load import replaying

    policy = replaying(rec)
    missed_on_quiet: set[str] = set()  # figures an attempt on a quiet host found outside
    for attempt in range(1, LATENCY_ATTEMPTS + 1):
        now = serve(policy)
        inside = {
            metric: latency_reproduces(now[metric], rec[metric], tuple(rec["load"][loop]["ci"][key]), tolerance)
            for metric, loop, key, _ in _LOAD_CHECKS
        }
        if now["load"]["quiet"]:
            missed_on_quiet |= {m for m, ok in inside.items() if not ok}
        if all(inside.values()) or not same_machine or attempt == LATENCY_ATTEMPTS:
            break
        _log.info(
            f"under load: {', '.join(m for m, ok in inside.items() if not ok)} outside the recorded CI and "
            f"{tolerance:.0%}; measuring again ({attempt + 1}/{LATENCY_ATTEMPTS})"
        )
    recorded, reported = serving.get("runtime") or {}, now["load"]["serving"]
    checks = [
        Check(
            "serving settings",
            settings_text(recorded),
            settings_text(reported),
            reported == recorded if same_machine else None,
            "as the runtime reports them: streams, threads, infer requests",
        )
    ]
    quiet = now["load"]["quiet"]
    for metric, loop, key, name in _LOAD_CHECKS:
        lo, hi = rec["load"][loop]["ci"][key]
        verdict = _verdict(inside[metric], same_machine, metric in missed_on_quiet)
        note = (
            (
                f"within the 95% CI {_figure(lo)}-{_figure(hi)} or {tolerance:.0%}"
                if same_machine
                else "not compared: exported on other hardware or libraries"
            )
            + (f" (arrivals at {now['load']['open']['rate']:.0f}/s)" if loop == "open" else "")
            + ("" if quiet else "; the host was contended in some windows")
            + (f"; {attempt} runs" if attempt > 1 else "")
        )
        checks.append(
            Check(name, _figure(rec[metric]), _figure(now[metric]), verdict, _busy(note, verdict, same_machine))
        )
    return checks


BUSY = "not compared: the host was busy while it was re-measured; run verify again on a quiet host"


def _verdict(inside: bool, same_machine: bool, missed_on_quiet: bool) -> bool | None:
    """A timing outside its band disproves the export only when one attempt on a quiet host found it outside:
    another process's threads on our CPUs make any figure slower by a factor of their own (a time slice per
    parallel region), so a busy host's figure says nothing about the export. None: not compared; the check table
    says why."""
    if not same_machine:
        return None
    return True if inside else (False if missed_on_quiet else None)


def _busy(note: str, verdict: bool | None, same_machine: bool) -> str:
    return f"{BUSY} ({note})" if same_machine and verdict is None else note


def not_compared_for_a_busy_host(checks: list[Check]) -> list[str]:
    """The timing checks left open because the host was busy (a clean 'reproduces' must not hide them)."""
    return [ch.name for ch in checks if ch.ok is None and ch.note.startswith(BUSY)]


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.4f}"


def checks_table(checks: list[Check]) -> str:
    rows = [("check", "recorded", "now", "result", "")] + [
        (ch.name, ch.recorded, ch.now, {True: "ok", False: "DIFFERS", None: "-"}[ch.ok], ch.note) for ch in checks
    ]
    return "\n".join(aligned(rows))
