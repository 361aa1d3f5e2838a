"""Data sets: the built-in offline ``digits``, arrays given to ``tuner.tune`` in memory, and any ImageFolder
directory (``tuner.image_folder``), loaded by ``load_dataset`` with a share of the validation images held out.

Images are kept decoded as uint8 NCHW arrays (4x smaller than float) and normalized per
batch (``tuner.dataset``); an ImageFolder is decoded once per content and resolution and memory-mapped by every
process (``tuner.decoded``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from tuner.dataset import (
    CALIBRATION_SIZE,
    Dataset,
    Split,
    check_decoded_fits,
    check_inputs,
    data_fingerprint,
)
from tuner.errors import DataError
from tuner.image_folder import image_folder

_log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = {"digits": 32}  # digits are 8x8 scans: 32 px keeps the default study fast
# digits' split, train / calibration / validation: 50 / 10 / 40. A larger validation share than usual: at 20%
# (292 images once the held-out ones are apart) top-1 moved in 0.34-point steps, a third of the default 1-point
# bound, so the compressed models tied at two levels; at 40% (579 images) a step is 0.17 points.
DIGITS_SPLIT = (0.5, 0.1, 0.4)
# The share of each class's validation images held out from the search (a `test/` folder, when there is one,
# is the held-out split instead): the study picks on the rest, so the pick's accuracy there is optimistic;
# export re-scores the pick on the held-out images, which nothing before it saw.
HOLDOUT_SHARE = 0.2


def load_dataset(
    source: str,
    resolution: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    holdout: float = HOLDOUT_SHARE,
) -> Dataset:
    """``digits``, a path to an ImageFolder (with ``train/`` and ``val/``, and ``test/``, inside when present), or
    a directory of arrays ``save_arrays`` wrote (data given to ``tuner.tune`` in memory); ``holdout`` of each
    class's validation images are kept apart (unless a ``test/`` folder is). ``cache_dir``: where an ImageFolder's
    decoded images are kept (under ``data/``; None: decoded into memory)."""
    check_inputs(resolution, mean, std)
    if not 0 <= holdout < 1:
        raise DataError(f"--holdout must be a fraction >= 0 and < 1 (0 keeps none apart), got {holdout}.")
    if (Path(source) / ARRAYS_META).is_file():
        data = _arrays(Path(source), resolution, mean, std, seed)
    elif source == "digits":
        data = _digits(resolution or DEFAULT_RESOLUTION["digits"], mean, std, seed)
    else:
        data = image_folder(
            Path(source), resolution or 224, mean or IMAGENET_MEAN, std or IMAGENET_STD, seed, cache_dir
        )
    if data.holdout is not None or not holdout:
        return data
    val, kept_apart = _hold_out(data.val, holdout, seed)
    return dataclasses.replace(
        data, val=val, holdout=kept_apart, fingerprint=data_fingerprint(data.fingerprint, holdout)
    )


def _hold_out(split: Split, share: float, seed: int) -> tuple[Split, Split | None]:
    """``share`` of each class's images (rounded down: a class with few keeps them all), fixed by the seed."""
    rng = np.random.default_rng(seed + 1)
    apart = np.zeros(len(split), dtype=bool)
    for c in np.unique(split.labels):
        own = np.flatnonzero(split.labels == c)
        apart[rng.permutation(own)[: int(share * len(own))]] = True
    if not apart.any():
        return split, None
    return (Split(split.images[~apart], split.labels[~apart]), Split(split.images[apart], split.labels[apart]))


# ---------------------------------------------------------------- digits (scikit-learn, offline)


def _digits(resolution: int, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, seed: int) -> Dataset:
    import torch

    digits, target = _digits_arrays()
    check_decoded_fits(len(target), resolution, "digits")
    small = torch.from_numpy(digits.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    images = np.empty((len(target), 3, resolution, resolution), np.uint8)  # 3 channels, as image models expect
    step = max(1, 2**24 // resolution**2)  # in chunks: the float copies stay small whatever the resolution
    for i in range(0, len(target), step):
        big = torch.nn.functional.interpolate(
            small[i : i + step], size=(resolution, resolution), mode="bilinear", align_corners=False
        )
        images[i : i + step] = big.clamp_(0, 255).round_().to(torch.uint8).numpy()
    labels = target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_calib, n_val = (int(len(labels) * share) for share in DIGITS_SPLIT[1:])
    val, calib, train = order[:n_val], order[n_val : n_val + n_calib], order[n_val + n_calib :]
    pixel = images[train].astype(np.float32) / 255.0
    mean = mean or tuple(float(pixel[:, c].mean()) for c in range(3))
    std = std or tuple(float(pixel[:, c].std()) for c in range(3))
    fp = data_fingerprint("digits", resolution, seed, mean, std, DIGITS_SPLIT)  # the scans never change
    return Dataset(
        "digits",
        tuple(str(c) for c in range(10)),
        resolution,
        tuple(mean),
        tuple(std),  # type: ignore[arg-type]
        Split(images[train], labels[train]),
        Split(images[val], labels[val]),
        Split(images[calib], labels[calib]),
        fp,
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits (values 0..16) and their labels, read from the CSV file scikit-learn ships,
    as ``load_digits`` reads it, without importing scikit-learn and SciPy (two seconds of every start)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = (
        Path(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
        if spec is not None and spec.submodule_search_locations
        else None
    )
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(csv, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


# ---------------------------------------------------------------- arrays (data given to tuner.tune in memory)

ARRAYS_META, ARRAYS_FORMAT = "arrays.json", "tuner-arrays/1"
_SPLITS = ("train", "val")


def save_arrays(out: Path, splits: dict[str, Split], classes: tuple[str, ...], name: str) -> None:
    """Write a train and a val split as .npy files (memory-mapped when read) beside their description."""
    import json

    for part in _SPLITS:
        np.save(out / f"{part}_images.npy", splits[part].images)
        np.save(out / f"{part}_labels.npy", splits[part].labels)
    (out / ARRAYS_META).write_text(json.dumps({"format": ARRAYS_FORMAT, "name": name, "classes": list(classes)}))


def _arrays(
    root: Path, resolution: int | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, seed: int
) -> Dataset:
    """uint8 images are normalized as any (by mean / std, from the train split when not given); float images are
    the model's input as given (``preprocessed``: mean / std do not apply). The directory's name is its content
    key (``tuner.api.inputs``)."""
    import json

    meta = json.loads((root / ARRAYS_META).read_text())
    train, val = (
        Split(np.load(root / f"{p}_images.npy", mmap_mode="r"), np.load(root / f"{p}_labels.npy")) for p in _SPLITS
    )
    size = int(train.images.shape[-1])
    if resolution is not None and resolution != size:
        raise DataError(
            f"the data's images are {size} x {size} px, not {resolution}; pass resolution={size} or "
            "leave it out (arrays are used as given, not resized)."
        )
    preprocessed = train.images.dtype != np.uint8
    if preprocessed and (mean is not None or std is not None):
        raise DataError(
            "mean and std apply to uint8 images; these are float, taken as the model's input as given: "
            "leave mean and std out, or pass uint8 images."
        )
    if preprocessed:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        pixel = np.asarray(train.images[:4096], np.float32) / 255.0
        mean = mean or tuple(float(pixel[:, c].mean()) for c in range(3))
        std = std or tuple(float(pixel[:, c].std()) or 1.0 for c in range(3))
    pick = np.sort(np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_SIZE])
    calib = Split(np.asarray(train.images[pick]), train.labels[pick])
    fp = data_fingerprint("arrays", root.name, seed, mean, std, CALIBRATION_SIZE)
    return Dataset(
        str(meta["name"]),
        tuple(meta["classes"]),
        size,
        tuple(mean),
        tuple(std),  # type: ignore[arg-type]
        train,
        val,
        calib,
        fp,
        preprocessed=preprocessed,
    )
