"""What ``tuner.tune`` is given, made into what every process of a study can load (``WorkloadSpec`` strings).

Names and paths pass as they are. A model in memory is saved once into the cache, keyed by its content (code
and weights): as a ``torch.fx`` GraphModule, which pickles without the user's class (a notebook's or a script's
``__main__`` class too), or, when fx cannot trace it, the module itself if its class is importable elsewhere;
else it is refused with the reason. A builder function is passed by name (``module:callable``) when another
process can import it. Data in memory (a torch Dataset, a DataLoader, or arrays) is read once, in order, under
a fixed seed (a loader's shuffling and random transforms draw the same images each time), and saved as arrays
keyed by their content, memory-mapped by the processes that read it (``tuner.data.save_arrays``).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tuner.cache import Cache, make_key, tensor_hash
from tuner.errors import ConfigError, DataError, ModelError, one_line

BATCH = 256  # images per read of a torch Dataset


# ---------------------------------------------------------------- the model


def model_reference(model: Any, resolution: int, cache: Cache) -> tuple[str, str | None]:
    """(the ``--model`` value, a name for the study where the value is a saved file) of a name, a path, a
    builder or an nn.Module."""
    if isinstance(model, (str, Path)):
        return str(model), None
    from torch import nn

    if isinstance(model, nn.Module):
        return str(_save_module(model, resolution, cache)), type(model).__name__
    if callable(model):
        return _importable_name(model), None
    raise ConfigError(
        f"model must be an nn.Module, a builder taking num_classes=, a model name or a path, got a "
        f"{type(model).__name__}."
    )


def _importable_name(fn: Callable[..., Any]) -> str:
    """``module:callable`` for a builder that another process can import; else a one-line refusal."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    found = None
    if module and module != "__main__" and "<locals>" not in name:
        try:
            found = getattr(importlib.import_module(module), name, None)
        except Exception:  # noqa: BLE001 - not importable: refused below
            found = None
    if found is not fn:
        raise ModelError(
            f"the builder {name or fn!r} is defined in {module or 'no module'}, which the trials' "
            "process cannot import; pass the built nn.Module itself (with its trained weights), or "
            "define the builder in an importable .py file."
        )
    return f"{module}:{name}"


def _save_module(model: Any, resolution: int, cache: Cache) -> Path:
    import torch

    from tuner import models

    module = copy.deepcopy(model).eval()  # the user's module stays as it was (train mode, device)
    module = module.to("cpu")
    example = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    weights = tensor_hash(module.state_dict())
    cls = type(module)
    traced, why = _traced(module, example)
    if traced is not None:
        key = make_key(
            stage="module",
            how="torch.fx",
            code=traced.code,
            structure=str(traced),
            weights=weights,
            torch=torch.__version__,
        )
        return (
            cache.entry(key, lambda d: models.save_module(traced, d, "torch.fx", cls.__qualname__))
            / models.SAVED_MODULE
        )
    where = _class_file(cls)
    if where is None:
        raise ModelError(
            f"the model ({cls.__qualname__}) cannot be rebuilt in the trials' process: torch.fx cannot "
            f"trace it ({why}) and its class is defined in {cls.__module__}, which another process "
            "cannot import; define the class in an importable .py file, or make its forward traceable."
        )
    try:
        pickle.dumps(module)
    except Exception as err:  # noqa: BLE001 - an attribute that does not pickle (a lambda, a file handle)
        raise ModelError(
            f"the model ({cls.__qualname__}) cannot be saved for the trials' process: torch.fx cannot "
            f"trace it ({why}) and pickling it fails ({one_line(err, 160, whole=True)})."
        ) from None
    key = make_key(
        stage="module",
        how="pickle",
        cls=f"{cls.__module__}.{cls.__qualname__}",
        source=hashlib.sha256(where.read_bytes()).hexdigest(),
        structure=repr(module),
        weights=weights,
        torch=torch.__version__,
    )
    return cache.entry(key, lambda d: models.save_module(module, d, "pickle", cls.__qualname__)) / models.SAVED_MODULE


def _traced(module: Any, example: Any) -> tuple[Any, str]:
    """(a GraphModule computing what ``module`` computes, "") or (None, why not)."""
    import torch

    try:
        traced = torch.fx.symbolic_trace(module)
        pickle.dumps(traced)
        with torch.no_grad():
            want, got = module(example), traced(example)
        if not isinstance(want, torch.Tensor) or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
            return None, "the traced graph computes other outputs"
        return traced, ""
    except Exception as err:  # noqa: BLE001 - data-dependent control flow and the like: fx says so variously
        return None, one_line(err, 160, whole=True)


def _class_file(cls: type) -> Path | None:
    """The file of a class another process can import by its module and name (None: __main__, a notebook...)."""
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return None
    try:
        found = importlib.import_module(cls.__module__)
        for part in cls.__qualname__.split("."):
            found = getattr(found, part)
        path = inspect.getsourcefile(cls)
    except Exception:  # noqa: BLE001 - not importable by name
        return None
    return Path(path) if found is cls and path and Path(path).is_file() else None


# ---------------------------------------------------------------- the data


def data_reference(
    train: Any, val: Any, classes: Sequence[str] | None, seed: int, cache: Cache
) -> tuple[str, int | None]:
    """(the ``--data`` value, the images' size where known) of 'digits', a folder, or train and val in memory."""
    if isinstance(train, (str, Path)):
        if val is not None:
            raise ConfigError(
                "val= goes with train data in memory; a folder is split by itself (train/ and val/ "
                "inside it, else a fifth of each class)."
            )
        return str(train), None
    if val is None:
        raise ConfigError(
            "pass val= too: the validation split that accuracy is measured on (train= is used for "
            "calibration and recovery)."
        )
    splits = {name: _arrays(obj, name, seed) for name, obj in (("train", train), ("val", val))}
    (tx, ty), (vx, vy) = splits["train"], splits["val"]
    if tx.shape[1:] != vx.shape[1:] or (tx.dtype == np.uint8) != (vx.dtype == np.uint8):
        raise DataError(
            f"train and val images differ: {tx.dtype} {tx.shape[1:]} and {vx.dtype} {vx.shape[1:]}; "
            "give both the same size and kind (uint8, or float preprocessed alike)."
        )
    n = int(max(ty.max(), vy.max())) + 1
    names = tuple(str(c) for c in (classes or _classes_of(train) or range(n)))
    if len(names) < n or len(names) < 2:
        raise DataError(
            f"the labels go up to {n - 1} but there are {len(names)} class names; pass classes= with one "
            "name per label (at least 2)."
        )
    from tuner.data import save_arrays
    from tuner.dataset import Split

    digest = hashlib.sha256(repr(names).encode())
    for a in (tx, ty, vx, vy):
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).data)
    entry = cache.entry(
        make_key(stage="arrays", content=digest.hexdigest()),
        lambda d: save_arrays(d, {"train": Split(tx, ty), "val": Split(vx, vy)}, names, "arrays"),
    )
    return str(entry), int(tx.shape[-1])


def _classes_of(obj: Any) -> Sequence[str] | None:
    """A torchvision data set's class names (``classes``), through a DataLoader too."""
    found = getattr(getattr(obj, "dataset", obj), "classes", None)
    return found if isinstance(found, (list, tuple)) and found else None


def _arrays(obj: Any, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of (images, labels) arrays or tensors, a torch Dataset or a DataLoader of (x, y)."""
    import torch

    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return _checked(name, _numpy(obj[0]), _numpy(obj[1]))
    if isinstance(obj, torch.utils.data.DataLoader):
        loader = obj
    elif isinstance(obj, torch.utils.data.Dataset) and hasattr(obj, "__len__"):
        loader = torch.utils.data.DataLoader(obj, batch_size=BATCH, shuffle=False)
    else:
        raise ConfigError(
            f"{name} must be 'digits', a folder, (images, labels) arrays, a torch Dataset or a "
            f"DataLoader, got a {type(obj).__name__}."
        )
    images, labels = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # shuffling and random transforms draw the same images on every read
        try:
            for batch in loader:
                if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                    raise ConfigError(f"{name} yields {type(batch).__name__} batches; each must be (images, labels).")
                images.append(_numpy(batch[0]))
                labels.append(_numpy(batch[1]).reshape(-1))
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's data set can raise anything while read
            raise DataError(f"reading {name} failed: {one_line(err, 160, whole=True)}") from None
    if not images:
        raise DataError(f"{name} holds no images.")
    return _checked(name, np.concatenate(images), np.concatenate(labels))


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _checked(name: str, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"{name} images have shape {images.shape}; pass N x 3 x H x W (channels first).")
    if images.shape[2] != images.shape[3]:
        raise DataError(f"{name} images are {images.shape[2]} x {images.shape[3]}; the tuner takes square images.")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise DataError(f"{name} images are {images.dtype}; pass uint8 pixels or float inputs ready for the model.")
        images = images.astype(np.float32, copy=False)
        if not np.isfinite(images).all():
            raise DataError(f"{name} images hold NaN or inf values.")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{name} labels must be {len(images)} integers (one per image), got {labels.dtype} {labels.shape}."
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"{name} labels must be >= 0 (class indices), got {labels.min()}.")
    return images, labels.astype(np.int64)
