"""Trials run in a child process: whatever goes wrong there (an exception from the user's model or a runtime,
a segfault, an out-of-memory kill, a hang past the trial timeout) fails one trial with a one-line reason, not
the study; and the parent (which only talks to Optuna) never starts torch or ORT thread pools."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import pickle
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tuner.candidate import Candidate
from tuner.child import describe_death, init_child, main_module_hidden
from tuner.errors import (
    CandidateBuildError,
    ConfigError,
    MeasurementError,
    ResourceExhausted,
    TunerError,
    full_disk,
    one_line,
    shortage,
)
from tuner.guardrails import Predictions
from tuner.metric import TOP1_METRIC, Metric
from tuner.pipeline import Evaluation
from tuner.workload import Workload
from tuner.workload_spec import WorkloadSpec

_log = logging.getLogger(__name__)

_workload: Workload | None = None  # the child's workload, loaded once per process


class TrialCrashed(MeasurementError):
    """The child process died while building or measuring (signal, out of memory)."""


class TrialTimedOut(MeasurementError):
    """The trial ran past its wall-clock limit; its process was stopped."""


class TrialInterrupted(MeasurementError):
    """Ctrl-C stopped the trial's process: not the candidate's doing, so the trial runs again on resume."""


def _load(spec: WorkloadSpec) -> Workload:
    global _workload
    if _workload is None or _workload.spec != spec:
        from tuner.workload import load_workload

        _workload = load_workload(spec)
    return _workload


def _reference(spec: WorkloadSpec, keep_logits: bool, corruptions: bool = False) -> dict[str, Any]:
    from tuner.pipeline import reference

    try:
        return reference(_load(spec), keep_logits, corruptions)
    except Exception as err:
        short = shortage(err) or full_disk(spec.cache_dir)
        if short:  # the baseline's training or the data's cache met a full disk: one line, not a library's trace
            raise ResourceExhausted(f"{short} under {spec.cache_dir}") from None
        raise


def _evaluate(
    spec: WorkloadSpec,
    candidate: dict[str, Any],
    min_accuracy: float | None,
    keep_logits: bool,
    load: bool,
    baseline: Predictions | None = None,
    limits: dict[str, float] | None = None,
    corruptions: bool = False,
    min_corruption: float | None = None,
) -> Evaluation:
    from tuner.pipeline import evaluate

    w = _load(spec)  # outside the guard: a workload that cannot load is the study's setup failing
    try:
        return evaluate(
            w, Candidate(**candidate), min_accuracy, keep_logits, load, baseline, limits, corruptions, min_corruption
        )
    except Exception as err:  # a full disk is the machine's, whatever raised it: the study stops
        short = shortage(err) or full_disk(w.cache.root)
        if short:
            raise ResourceExhausted(f"{short} under {w.cache.root or 'the temporary directory'}") from None
        if isinstance(err, TunerError):
            raise
        if isinstance(err, MemoryError):
            raise MeasurementError("out of memory while building or measuring this candidate") from None
        raise CandidateBuildError(one_line(err)) from None


class Worker:
    """A one-process pool that is replaced when its process dies. With a metric of the user's, the child sends
    the validation logits back and the metric is scored here (``tuner.metric``). The reference's validation
    predictions are kept here and sent with every trial (a fresh child after a crash gets them too), for the
    guardrail figures (``tuner.guardrails``)."""

    def __init__(
        self,
        spec: WorkloadSpec,
        metric: Metric = TOP1_METRIC,
        on_status: Callable[[str], None] | None = None,
        corruptions: bool = False,
    ):
        self.spec = spec
        self.metric = metric
        self.corruptions = corruptions  # every trial (and the reference) scored on the corruption set too
        self.on_status = on_status or _log.info  # the child's progress lines (tuner.progress), told by the parent
        self._labels: Any = None  # the validation labels, sent once with the reference's logits
        self._baseline: Predictions | None = None  # the reference's validation predictions (``reference``)
        self._pool: ProcessPoolExecutor | None = None
        self._drainer: threading.Thread | None = None  # passes the child's progress lines on
        self._closing = threading.Event()
        self.interrupted = False  # set by Ctrl-C (``interrupt``)

    def _drain(self, reader: Any) -> None:
        """Pass the child's progress lines on until the pool closes; a pipe broken under a killed child (a line
        half written) ends it too: progress is not worth a traceback. No lock is shared with the child, so a child
        killed mid-line can never block the parent."""
        while not self._closing.is_set():
            try:
                if reader.poll(0.2):
                    self.on_status(reader.recv())
            except (EOFError, OSError, ValueError, pickle.UnpicklingError):
                return

    def _submit(self, fn: Any, *args: Any, timeout: float | None = None) -> Any:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            reader, writer = context.Pipe(duplex=False)
            self._closing.clear()
            self._drainer = threading.Thread(target=self._drain, args=(reader,), daemon=True)
            self._drainer.start()
            self._pool = ProcessPoolExecutor(1, context, initializer=init_child, initargs=(writer,))
        processes: list[Any] = []
        try:
            # a Ctrl-C between two trials killed the idle child: the pool is broken before anything is submitted
            with main_module_hidden():  # the child starts here (spawn): it must not run the caller's script again
                future = self._pool.submit(fn, self.spec, *args)
            processes = list((self._pool._processes or {}).values())  # to read exit codes, and stop a hung child
            return future.result(timeout=timeout)
        except FutureTimeout:
            self.close()  # a hung child: stopped; the next trial starts a fresh one
            raise TrialTimedOut(
                f"no result within {timeout:.0f} s: the trial's process was stopped (a hang, or "
                "a candidate slower than --trial-timeout allows)"
            ) from None
        except BrokenProcessPool:
            self.close()
            if self.interrupted:
                raise TrialInterrupted("stopped by Ctrl-C; it runs again when the study resumes") from None
            code = next((p.exitcode for p in processes if p.exitcode), None)
            raise TrialCrashed(describe_death(code)) from None

    def interrupt(self) -> None:
        """Ctrl-C: stop the child now (a trial's build, or the baseline's training, would otherwise run on)."""
        self.interrupted = True
        self._kill()

    def _kill(self) -> bool:
        """Kill the child; True once it is gone."""
        processes = list((self._pool._processes or {}).values()) if self._pool is not None else []
        for p in processes:
            p.kill()
            p.join(timeout=5)
        return all(p.exitcode is not None for p in processes)

    def reference(self, timeout: float | None = None) -> dict[str, Any]:
        """Load the workload in the child (training a baseline if needed) and score the reference model."""
        found = self._submit(_reference, self.metric.custom, self.corruptions, timeout=timeout)
        self._baseline = found.pop("predictions", None)
        if not self.metric.custom:
            return found
        logits, self._labels = found.pop("logits"), found.pop("labels")
        try:
            return self.metric.rescore(found, logits, self._labels)
        except MeasurementError as err:  # on the reference model: the study cannot score anything
            raise ConfigError(
                f"{str(err).rstrip('.')} (scoring the reference model); fix the metric function."
            ) from None

    def evaluate(
        self,
        candidate: Candidate,
        min_accuracy: float | None = None,
        timeout: float | None = None,
        load: bool = False,
        limits: dict[str, float] | None = None,
        min_corruption: float | None = None,
        corruptions: bool | None = None,
    ) -> Evaluation:
        """Build and measure ``candidate`` in the child; ``min_accuracy`` (top-1 only) stops a hopeless one early,
        and so do guardrail ``limits`` (``tuner.guardrails.Tally``); ``load``: measure it under load too (the
        study's objectives use a figure under load). The guardrail figures come once ``reference`` ran; the top-1 on
        the corruption set where the worker was made with ``corruptions`` (``min_corruption`` stops it early;
        ``corruptions``: this trial's own say, None for the worker's)."""
        corruptions = self.corruptions if corruptions is None else corruptions
        if not self.metric.custom:
            return self._submit(
                _evaluate,
                candidate.to_dict(),
                min_accuracy,
                False,
                load,
                self._baseline,
                limits,
                corruptions,
                min_corruption,
                timeout=timeout,
            )
        if self._labels is None:
            self.reference(timeout)
        ev = self._submit(
            _evaluate,
            candidate.to_dict(),
            None,
            True,
            load,
            self._baseline,
            limits,
            corruptions,
            min_corruption,
            timeout=timeout,
        )
        assert ev.logits is not None
        return dataclasses.replace(ev, metrics=self.metric.rescore(ev.metrics, ev.logits, self._labels), logits=None)

    def close(self) -> None:
        """Stop the child, busy or not: nothing it would still do is wanted (and exiting must not wait for it)."""
        if self._pool is not None:
            # Wait for the pool's manager thread once the child is gone (it ends at once then): left running, it
            # races the interpreter's exit hook, which wrote a traceback (a closed pipe) after our error line
            # (Python 3.11: 2 of 30 runs of a pool killed then left). Not while a child survives a kill: exiting must never wait on it.
            self._pool.shutdown(wait=self._kill(), cancel_futures=True)
            self._pool = None
            self._closing.set()  # ends the drain thread
            if self._drainer is not None:
                self._drainer.join(timeout=2)
