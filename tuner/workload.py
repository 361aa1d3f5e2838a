"""The workload loaded: a ``WorkloadSpec`` (tuner.workload_spec) turned by ``load_workload`` into a ``Workload``
with the data decoded and the reference weights in hand, training a baseline once (cached) when no ``--weights``
are given; a model brought as an ONNX file checked and prepared; ``--student`` built and checked.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.cache import Cache, code_id, make_key, sha256_file, tensor_hash
from tuner.data import load_dataset
from tuner.dataset import Dataset, Split
from tuner.errors import ModelError, UnsupportedCombination
from tuner.hardware import library_versions
from tuner.paths import model_id
from tuner.workload_spec import WorkloadSpec

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class OnnxSource:
    """A model brought as an ONNX file: the prepared copy (tuner.onnx_model.prepare) and its counts."""

    path: Path
    macs: int
    params: int


@dataclass(frozen=True)
class Student:
    """--student resolved: its name (a --model value), the initial weights every trial starts it from (seeded,
    or the builder's own) and their content key (its code and those weights)."""

    name: str
    state_dict: dict[str, torch.Tensor]
    key: str


@dataclass
class Workload:
    spec: WorkloadSpec
    data: Dataset
    builder: Callable[..., nn.Module] | None  # None: an ONNX file (``onnx``), no torch graph
    state_dict: dict[str, torch.Tensor]  # the reference (unpruned fp32) weights
    key: str  # content key of model code + weights + data + libraries: the root of every cache key
    cache: Cache
    onnx: OnnxSource | None = None  # the model as an ONNX file, the fp32 artifact every ONNX build starts from
    student: Student | None = None  # --student: the user's smaller model, its initial weights and their key

    def reference_model(self) -> nn.Module:  # a fresh copy: build steps prune and fold it in place
        if self.builder is None:
            raise ModelError(f"{self.spec.model} is an ONNX file: this needs the model's torch graph.")
        model = self.builder(num_classes=self.data.num_classes)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def identity(self) -> dict[str, Any]:
        """What defines the reference every trial's accuracy drop is against, part by part (``tuner.study.resume``):
        a study resumed under another one would put two workloads' trials on one front. The data are hashed by their
        decoded pixels and labels (so neither a path nor a file's date matters), the weights by content."""
        d, spec = self.data, self.spec
        if self.onnx is not None:
            model, weights = "onnx", sha256_file(spec.model)[:20]
        else:
            model, weights = _model_identity(spec.model), tensor_hash(self.state_dict)
        splits = [s for s in (d.train, d.val, d.holdout) if s is not None]
        return {
            "model": model,
            "weights": weights,
            "data": _content_hash(d.classes, splits),
            "images": sum(len(s) for s in splits),
            "resolution": d.resolution,
            "normalization": [round(float(v), 6) for v in (*d.mean, *d.std)],
            "split": {"seed": spec.seed, "holdout": spec.holdout},
            "student": self.student.key if self.student is not None else None,
        }

    def start_model(self, student: bool) -> tuple[nn.Module, str]:
        """(a fresh copy of what compression starts from, its content key): the reference model, or with
        ``student`` the user's student in its initial weights (distillation from the reference trains it)."""
        if not student:
            return self.reference_model(), self.key
        if self.student is None:
            raise UnsupportedCombination(
                "student is refused: no --student SPEC was given (the user's own smaller "
                "model); the derived students are drop_blocks and prune_ratio"
            )
        from tuner import models

        model = models.create_model(self.student.name, self.data.num_classes)
        model.load_state_dict(self.student.state_dict)
        return model.eval(), make_key(stage="distil", student=self.student.key, teacher=self.key)


def _model_identity(name: str) -> str:
    """A built-in or zoo model by its name (a library upgrade does not make it another model); a user's code by
    its callable and its file's content (not its path)."""
    from tuner import models

    if models.is_saved_module(name):
        return models.source_id(name)
    if name in models.BUILTIN or ":" not in name:
        return name
    return f"{name.rpartition(':')[2]} {models.source_id(name)}"


def _content_hash(classes: Sequence[str], splits: Sequence[Split]) -> str:
    """The classes, and each split's labels and decoded images (a memory-mapped split read a chunk at a time)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(repr(tuple(classes)).encode())
    for split in splits:
        h.update(np.ascontiguousarray(split.labels, np.int64).tobytes())
        for start in range(0, len(split), 256):
            h.update(np.ascontiguousarray(split.images[start : start + 256]).tobytes())
    return h.hexdigest()[:20]


def load_workload(spec: WorkloadSpec) -> Workload:
    import torch

    from tuner import models
    from tuner.weights import classifier_classes, load_weights, read_state_dict

    cache_root = Path(spec.cache_dir) if spec.cache_dir else None
    if spec.onnx:
        return _onnx_workload(spec, cache_root)
    for name in filter(None, (spec.model, spec.student)):  # an unknown model or bad weights fail before a large
        models.resolve_builder(name)  # data set is decoded
    state = read_state_dict(spec.weights) if spec.weights else None
    data = load_dataset(spec.data, spec.resolution, spec.mean, spec.std, spec.seed, cache_root, spec.holdout)
    torch.manual_seed(spec.seed)  # the baseline's initial weights, so a trained baseline is reproducible
    model = models.create_model(spec.model, data.num_classes)
    # One real batch of 2 through the model, as every trial will run it: a model with two inputs, a tuple or a
    # wrongly shaped output, or a forward that exits is refused now, in one line.
    models.check_forward(model, torch.from_numpy(data.example(2)), data.num_classes, spec.model)
    student = _student(spec, data) if spec.student else None  # refused, if it must be, before a baseline trains
    source = models.source_id(spec.model)
    cache = Cache(cache_root, claims_url=spec.claims)
    baseline_key = None
    if state is not None:
        assert spec.weights is not None
        n = classifier_classes(state)
        if n is not None and n != data.num_classes:
            raise ModelError(
                f"weights {spec.weights} have a {n}-class classifier but the data has "
                f"{data.num_classes} classes; pass weights trained on this data's classes."
            )
        load_weights(model, state, spec.weights)
    elif models.carries_weights(spec.model):  # a module given in memory: its own weights are the reference
        state = model.state_dict()
    else:
        baseline_key = _baseline_key(spec, data, source)
        state = _baseline(spec, data, model, cache, baseline_key)
        model.load_state_dict(state)
    # Every input that changes what a build produces is in this key, the root of every build's key: the model's
    # code, its weights (by content), the data (content, resolution, split seed, normalization), the baseline's
    # budget when trained here, and the libraries that compute it.
    key = make_key(
        model=model_id(spec.model),
        source=source,
        weights=tensor_hash(state),
        data=data.fingerprint,
        baseline=baseline_key,
        torch=torch.__version__,
        libraries=library_versions("numpy"),
    )
    return Workload(
        spec,
        data,
        lambda num_classes: models.create_model(spec.model, num_classes),
        model.state_dict(),
        key,
        cache,
        student=student,
    )


def _student(spec: WorkloadSpec, data: Dataset) -> Student:
    """--student built once, checked on a real batch as the model is, its initial weights seeded."""
    import torch

    from tuner import models

    assert spec.student is not None
    with torch.random.fork_rng(devices=[]):  # the baseline's training draws after this as it would without
        torch.manual_seed(spec.seed + 1)  # not the baseline's initial weights
        model = models.create_model(spec.student, data.num_classes)
    models.check_forward(model, torch.from_numpy(data.example(2)), data.num_classes, f"{spec.student} (--student)")
    models.check_forward(
        copy.deepcopy(model),
        torch.from_numpy(data.example(2)),
        data.num_classes,
        f"{spec.student} (--student)",
        train=True,
    )  # it is trained: training mode must run too
    state = model.state_dict()
    key = make_key(
        stage="student", model=model_id(spec.student), source=models.source_id(spec.student), weights=tensor_hash(state)
    )
    return Student(spec.student, state, key)


def _onnx_workload(spec: WorkloadSpec, cache_root: Path | None) -> Workload:
    """An ONNX file as the model: checked before the data loads, prepared (tuner.onnx_model) and run on a real
    batch in a scratch directory, and only then kept in the cache, keyed by the file's content."""
    import shutil
    import tempfile

    from tuner import onnx_model

    if spec.weights:
        raise ModelError(f"--weights applies to torch models; {spec.model} is an ONNX file, which holds its weights.")
    source = Path(spec.model)
    sig = onnx_model.read_signature(source)
    data = load_dataset(
        spec.data, spec.resolution or sig.height, spec.mean, spec.std, spec.seed, cache_root, spec.holdout
    )
    if sig.height is not None and sig.height != data.resolution:
        raise ModelError(
            f"model file {source} takes {sig.height} x {sig.width} images but the data is at "
            f"{data.resolution} px; pass --resolution {sig.height}."
        )
    if sig.classes is not None and sig.classes != data.num_classes:
        raise ModelError(
            f"model file {source} has {sig.classes} output classes but the data has {data.num_classes}; "
            "pass the model trained on this data's classes."
        )
    key = make_key(
        stage="onnx-source",
        file=sha256_file(source),
        code=code_id("tuner.onnx_model"),
        libraries=library_versions("onnx"),
    )
    scratch = Path(tempfile.mkdtemp(prefix="tuner-onnx-"))
    try:  # a file that fails here leaves nothing behind in the cache
        prepared = onnx_model.prepare(source, scratch / "model.onnx")
        onnx_model.check_runs(prepared, data.example(2), data.num_classes, str(source), sig)
        cache = Cache(cache_root, claims_url=spec.claims)
        entry = cache.entry(key, lambda d: shutil.copyfile(prepared, d / "model.onnx"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if sig.batch is not None:
        _log.info(
            f"{source} has a fixed batch of {sig.batch}: the tuner runs it with a symbolic batch (checked: a batch "
            "of 2 gives each image's own logits)"
        )
    macs, params = onnx_model.count(entry / "model.onnx", data.resolution)
    # The root of every build's key: the file (by content), the data, and the libraries that read and run it.
    workload_key = make_key(
        model="onnx", source=key, data=data.fingerprint, libraries=library_versions("numpy", "onnx", "onnxruntime")
    )
    return Workload(spec, data, None, {}, workload_key, cache, OnnxSource(entry / "model.onnx", macs, params))


BASELINE_LR = 2e-3


def _baseline_key(spec: WorkloadSpec, data: Dataset, source: str) -> str:
    """The content key of a trained baseline: model code, data (with its normalization, resolution and seed),
    budget, seed, the training code and the libraries."""
    import torch

    return make_key(
        stage="baseline",
        model=model_id(spec.model),
        source=source,
        data=data.fingerprint,
        steps=spec.train_steps,
        seed=spec.seed,
        lr=BASELINE_LR,
        code=code_id("tuner.train"),
        torch=torch.__version__,
        libraries=library_versions("numpy"),
    )


def _baseline(spec: WorkloadSpec, data: Dataset, model: nn.Module, cache: Cache, key: str) -> dict[str, torch.Tensor]:
    """Train a baseline once per content key (``_baseline_key``); later runs load it."""
    import torch

    from tuner import models
    from tuner.train import torch_accuracy, train

    # Training runs the model in training mode, where some models return other things (aux outputs): refused
    # before anything is written (on a copy: a training-mode forward moves BatchNorm statistics).
    models.check_forward(
        copy.deepcopy(model), torch.from_numpy(data.example(2)), data.num_classes, spec.model, train=True
    )

    def build(out: Path) -> None:
        _log.info(
            f"no --weights given: training a {spec.model} baseline on {data.name} at {data.resolution} px "
            f"({spec.train_steps} steps, seed {spec.seed}); done once, then cached"
        )
        start = time.perf_counter()
        train(model, data, spec.train_steps, lr=BASELINE_LR, seed=spec.seed, what="training the baseline")
        torch.save(model.state_dict(), out / "weights.pt")
        _log.info(
            f"baseline trained in {time.perf_counter() - start:.0f} s: top-1 {torch_accuracy(model, data):.2%} on "
            f"{len(data.val)} validation images"
        )

    entry = cache.entry(key, build)
    if cache.hits and cache.root is not None:
        _log.info(f"using the cached baseline {entry / 'weights.pt'}")
    return torch.load(entry / "weights.pt", map_location="cpu", weights_only=True)
