"""Trials run in a child process: a segfault or out-of-memory kill there fails one trial, not the
study, and the parent (which only talks to Optuna) never starts torch or ORT thread pools."""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tuner.candidate import Candidate
from tuner.child import describe_death, init_child
from tuner.errors import MeasurementError
from tuner.pipeline import Evaluation
from tuner.workload import Workload, WorkloadSpec

_workload: Workload | None = None  # the child's workload, loaded once per process


class TrialCrashed(MeasurementError):
    """The child process died while building or measuring (signal, out of memory)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(spec: WorkloadSpec) -> Workload:
    global _workload
    if _workload is None or _workload.spec != spec:
        from tuner.workload import load_workload

        _workload = load_workload(spec, _log)
    return _workload


def _reference(spec: WorkloadSpec) -> dict[str, Any]:
    from tuner.train import torch_accuracy

    w = _load(spec)
    return {"accuracy": torch_accuracy(w.reference_model(), w.data), "workload_key": w.key,
            "data": w.data.name, "resolution": w.data.resolution, "num_classes": w.data.num_classes,
            "validation_images": len(w.data.val)}


def _evaluate(spec: WorkloadSpec, candidate: dict[str, Any], min_accuracy: float | None) -> Evaluation:
    from tuner.pipeline import evaluate

    return evaluate(_load(spec), Candidate(**candidate), min_accuracy)


class Worker:
    """A one-process pool that is replaced when its process dies."""

    def __init__(self, spec: WorkloadSpec):
        self.spec = spec
        self._pool: ProcessPoolExecutor | None = None

    def _submit(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), initializer=init_child)
        future = self._pool.submit(fn, self.spec, *args)
        processes = list((self._pool._processes or {}).values())
        try:
            return future.result()
        except BrokenProcessPool:
            self.close()
            for p in processes:
                p.join(timeout=5)
            code = next((p.exitcode for p in processes if p.exitcode), None)
            raise TrialCrashed(describe_death(code)) from None

    def reference(self) -> dict[str, Any]:
        """Load the workload in the child (training a baseline if needed) and score the reference model."""
        return self._submit(_reference)

    def evaluate(self, candidate: Candidate, min_accuracy: float | None = None) -> Evaluation:
        return self._submit(_evaluate, candidate.to_dict(), min_accuracy)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
