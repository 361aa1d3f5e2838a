"""The workload: what the user brings (model, weights, data) resolved into ready-to-build pieces.

``WorkloadSpec`` is plain data (it crosses into trial worker processes); ``load_workload``
turns it into a ``Workload`` with the data decoded and the reference weights in hand,
training a baseline once (cached) when no ``--weights`` are given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.cache import Cache, code_id, make_key
from tuner.data import HOLDOUT_SHARE, Dataset, load_dataset
from tuner.errors import ConfigError, ModelError
from tuner.hardware import library_versions

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class WorkloadSpec:
    model: str = "resnet18"
    data: str = "digits"
    weights: str | None = None
    resolution: int | None = None  # None: the data set's default (digits 32, ImageFolder 224)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    seed: int = 0
    train_steps: int = 100  # baseline training budget, only used without --weights
    holdout: float = HOLDOUT_SHARE  # share of the validation images kept from the search (export scores them)
    recover_epochs: float = 2.0  # short recovery, epochs over the train split, for half the compute removed
    cache_dir: str | None = "studies/cache"  # None: cache nothing

    def to_record(self) -> dict[str, Any]:
        """What a study records of its workload (the cache directory is the reader's own)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "cache_dir"}

    @classmethod
    def from_record(cls, record: Any, cache_dir: str | None, source: str = "the study") -> WorkloadSpec:
        if not isinstance(record, dict):
            raise ConfigError(f"{source} records no workload; was it created by `tuner run`?")
        known = {f.name for f in dataclasses.fields(cls)} - {"cache_dir"}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in known}  # JSON lists
        return cls(**kwargs, cache_dir=cache_dir)


@dataclass
class Workload:
    spec: WorkloadSpec
    data: Dataset
    builder: Callable[..., nn.Module]
    state_dict: dict[str, torch.Tensor]  # the reference (unpruned fp32) weights
    key: str  # content key of model code + weights + data + libraries: the root of every cache key
    cache: Cache

    def reference_model(self) -> nn.Module:  # a fresh copy: build steps prune and fold it in place
        model = self.builder(num_classes=self.data.num_classes)
        model.load_state_dict(self.state_dict)
        return model.eval()


def load_workload(spec: WorkloadSpec, log: Callable[[str], None] = print) -> Workload:
    import torch

    from tuner import models

    cache_root = Path(spec.cache_dir) if spec.cache_dir else None
    models.resolve_builder(spec.model)  # an unknown model or bad weights fail before a large data set is decoded
    state = models.read_state_dict(spec.weights) if spec.weights else None
    data = load_dataset(spec.data, spec.resolution, spec.mean, spec.std, spec.seed, cache_root, spec.holdout)
    torch.manual_seed(spec.seed)  # the baseline's initial weights, so a trained baseline is reproducible
    model = models.create_model(spec.model, data.num_classes)
    # One real batch of 2 through the model, as every trial will run it: a model with two inputs, a tuple or a
    # wrongly shaped output, or a forward that exits is refused now, in one line.
    models.check_forward(model, torch.from_numpy(data.example(2)), data.num_classes, spec.model)
    source = models.source_id(spec.model)
    cache = Cache(cache_root)
    baseline_key = None
    if state is not None:
        assert spec.weights is not None
        n = models.classifier_classes(state)
        if n is not None and n != data.num_classes:
            raise ModelError(f"weights {spec.weights} have a {n}-class classifier but the data has "
                             f"{data.num_classes} classes; pass weights trained on this data's classes.")
        models.load_weights(model, state, spec.weights)
    else:
        baseline_key = _baseline_key(spec, data, source)
        state = _baseline(spec, data, model, cache, log, baseline_key)
        model.load_state_dict(state)
    # Every input that changes what a build produces is in this key, the root of every build's key: the model's
    # code, its weights (by content), the data (content, resolution, split seed, normalization), the baseline's
    # budget when trained here, and the libraries that compute it.
    key = make_key(model=spec.model, source=source, weights=_tensor_hash(state), data=data.fingerprint,
                   baseline=baseline_key, torch=torch.__version__, libraries=library_versions("numpy"))
    return Workload(spec, data, lambda num_classes: models.create_model(spec.model, num_classes),
                    model.state_dict(), key, cache)


BASELINE_LR = 2e-3


def _baseline_key(spec: WorkloadSpec, data: Dataset, source: str) -> str:
    """The content key of a trained baseline: model code, data (with its normalization, resolution and seed),
    budget, seed, the training code and the libraries."""
    import torch

    return make_key(stage="baseline", model=spec.model, source=source, data=data.fingerprint,
                    steps=spec.train_steps, seed=spec.seed, lr=BASELINE_LR, code=code_id("tuner.train"),
                    torch=torch.__version__, libraries=library_versions("numpy"))


def _baseline(spec: WorkloadSpec, data: Dataset, model: nn.Module, cache: Cache,
              log: Callable[[str], None], key: str) -> dict[str, torch.Tensor]:
    """Train a baseline once per content key (``_baseline_key``); later runs load it."""
    import copy

    import torch

    from tuner import models
    from tuner.train import torch_accuracy, train

    # Training runs the model in training mode, where some models return other things (aux outputs): refused
    # before anything is written (on a copy: a training-mode forward moves BatchNorm statistics).
    models.check_forward(copy.deepcopy(model), torch.from_numpy(data.example(2)), data.num_classes, spec.model,
                         train=True)

    def build(out: Path) -> None:
        log(f"no --weights given: training a {spec.model} baseline on {data.name} at {data.resolution} px "
            f"({spec.train_steps} steps, seed {spec.seed}); done once, then cached")
        start = time.perf_counter()
        train(model, data, spec.train_steps, lr=BASELINE_LR, seed=spec.seed)
        torch.save(model.state_dict(), out / "weights.pt")
        log(f"baseline trained in {time.perf_counter() - start:.0f} s: top-1 {torch_accuracy(model, data):.2%} on "
            f"{len(data.val)} validation images")

    entry = cache.entry(key, build)
    if cache.hits and cache.root is not None:
        log(f"using the cached baseline {entry / 'weights.pt'}")
    return torch.load(entry / "weights.pt", map_location="cpu", weights_only=True)


def _tensor_hash(state: dict[str, torch.Tensor]) -> str:
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]
