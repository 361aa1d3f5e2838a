"""One latency measurement (and, for studies under load, one load measurement) in a fresh interpreter:
``measure_in_fresh_process`` (the parent's side) runs ``python -m tuner.remeasure.runner`` (the child's side),
which loads the workload, builds the candidate from the cache and times it through ``tuner.measure`` as a trial
does, without the accuracy pass.

A new interpreter inherits nothing (not even the caller's main module, which a multiprocessing "spawn" child
would import again). The job goes in as JSON on stdin; the result comes back as the one JSON line on stdout
(the child sends everything else it or its libraries print to stderr, which the parent keeps for the error).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tuner.child import describe_death, init_child
from tuner.errors import MeasurementError, one_line
from tuner.measure.latency import LatencyPolicy
from tuner.measure.load import LoadPolicy
from tuner.workload_spec import WorkloadSpec

WARMUP_SECONDS = 0.5  # the study's figure came after a whole accuracy pass: warm up for a while too


def measure_in_fresh_process(
    spec: WorkloadSpec,
    candidate: dict[str, Any],
    policy: LatencyPolicy,
    timeout: float,
    full_speed_ms: float | None = None,
    load: LoadPolicy | None = None,
) -> dict[str, Any]:
    """Run one measurement in a new interpreter, and end it whatever happens (timeout, Ctrl-C).

    ``full_speed_ms``: the host probe's full-speed canary time seen by earlier processes, so that a process
    starting while the host is contended does not take that for full speed. ``load``: measure under load too
    (``tuner.measure.serve_session``); its figures come back beside the latency's.
    """
    job = {
        "spec": dataclasses.asdict(spec),
        "candidate": candidate,
        "policy": dataclasses.asdict(policy),
        "sys_path": [p for p in sys.path if p],
        "full_speed_ms": full_speed_ms,
        "load": dataclasses.asdict(load) if load is not None else None,
    }
    root = str(Path(__file__).resolve().parents[2])  # the very `tuner` this process runs
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.remeasure.runner"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )  # the terminal's Ctrl-C is the parent's alone
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
    raise MeasurementError(
        describe_death(proc.returncode, "the measuring process") + (f": {last[:200]}" if last else "")
    )


def _main() -> int:
    """``python -m tuner.remeasure.runner``: one job from stdin, one JSON line on stdout."""
    init_child()
    result_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed while working (Python or C level) goes to stderr
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.read())
    sys.path[:0] = [p for p in job["sys_path"] if p not in sys.path]  # e.g. the caller's cwd for module:callable
    spec = WorkloadSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["spec"].items()})
    try:
        load = LoadPolicy(**job["load"]) if job.get("load") else None
        result = {
            "ok": True,
            **_time_latency(spec, job["candidate"], LatencyPolicy(**job["policy"]), job.get("full_speed_ms"), load),
        }
    except Exception as err:  # noqa: BLE001 - reported to the parent as this trial's error
        result = {"ok": False, "error": one_line(err)}
    with os.fdopen(result_fd, "w") as out:
        out.write(json.dumps(result) + "\n")
    return 0


def _time_latency(
    spec: WorkloadSpec,
    candidate: dict[str, Any],
    policy: LatencyPolicy,
    full_speed_ms: float | None = None,
    load: LoadPolicy | None = None,
) -> dict[str, Any]:
    """Load the workload, build the candidate (from the cache), time it (and load it) as a trial does."""
    from tuner.candidate import Candidate
    from tuner.measure import host, open_session, resolve_threads, serve_session, time_session
    from tuner.passes.chain import build
    from tuner.workload import load_workload

    host.remember(full_speed_ms)
    workload = load_workload(spec)  # no handler here: its info lines stay silent
    c = Candidate(**candidate)
    session = open_session(build(workload, c))
    try:
        lat = time_session(
            session, workload.data, c.batch_size, resolve_threads(c.threads, c.streams), policy, WARMUP_SECONDS
        )
        served = serve_session(session, workload.data, c, load) if load is not None else {}
    finally:
        session.close()
    return {
        "median_ms": lat.median_ms,
        "ci_ms": [lat.ci_low_ms, lat.ci_high_ms],
        "samples": lat.samples,
        "quiet": lat.quiet,
        "contended_share": lat.contended_share,
        "host_reference_ms": host.reference_ms(),
        "pid": os.getpid(),
        **served,
    }


if __name__ == "__main__":
    sys.exit(_main())
