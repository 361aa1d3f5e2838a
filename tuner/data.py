"""Data sets: the built-in offline ``digits`` and any ImageFolder directory.

Images are kept decoded as uint8 NCHW arrays (4x smaller than float) and normalized per
batch; an ImageFolder is decoded once per content and resolution and memory-mapped by every process
(``tuner.decoded``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner import decoded
from tuner.errors import DataError

_log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = {"digits": 32}  # digits are 8x8 scans: 32 px keeps the default study fast
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
CALIBRATION_SIZE = 256  # ORT static quantization needs a few hundred samples, not more
# The share of each class's validation images held out from the search (a `test/` folder, when there is one,
# is the held-out split instead): the study picks on the rest, so the pick's accuracy there is optimistic;
# export re-scores the pick on the held-out images, which nothing before it saw.
HOLDOUT_SHARE = 0.2
# The fewest images a class may have: one to validate on and two to train (and calibrate) on. With one
# ImageFolder and no train/ and val/, a fifth of each class (at least one image) is held out for validation.
MIN_TRAIN_PER_CLASS, MIN_VAL_PER_CLASS = 2, 1
MIN_RESOLUTION, MAX_RESOLUTION = 8, 2048


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, N x 3 x H x W
    labels: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: Split
    val: Split
    calib: Split
    fingerprint: str  # content hash: caches keyed on it never mix data sets
    holdout: Split | None = None  # never seen by the search (not trained, calibrated or scored on); None: none kept
    preprocessed: bool = False  # float images given ready for the model (tuner.tune): no normalization applies

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        if self.preprocessed:
            return np.array(images, dtype=np.float32)  # a copy: a memory-mapped split is read-only
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1) * 255.0
        return (images.astype(np.float32) - mean) / std

    def batches(self, split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(normalized float32 inputs, labels) in order; the last batch may be smaller."""
        for i in range(0, len(split), batch_size):
            yield self.normalize(split.images[i : i + batch_size]), split.labels[i : i + batch_size]

    def example(self, batch_size: int = 1) -> np.ndarray:
        """A normalized input batch of real validation images (repeated if the split is short)."""
        idx = np.arange(batch_size) % len(self.val)
        return self.normalize(self.val.images[idx])


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
        data = _image_folder(
            Path(source), resolution or 224, mean or IMAGENET_MEAN, std or IMAGENET_STD, seed, cache_dir
        )
    if data.holdout is not None or not holdout:
        return data
    val, kept_apart = _hold_out(data.val, holdout, seed)
    return dataclasses.replace(data, val=val, holdout=kept_apart, fingerprint=_fingerprint(data.fingerprint, holdout))


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


def check_inputs(resolution: int | None, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> None:
    """The numbers that shape every input, checked before anything loads (the CLI calls this first too)."""
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise DataError(f"--resolution must be between {MIN_RESOLUTION} and {MAX_RESOLUTION} pixels, got {resolution}.")
    for name, value in (("mean", mean), ("std", std)):
        if value is None:
            continue
        if len(value) != 3:
            raise DataError(f"--{name} takes three numbers (R G B), got {len(value)}: {tuple(value)}.")
        for channel, v in zip("RGB", value):
            if not math.isfinite(v):
                raise DataError(f"--{name} {channel} is {v}; it must be a finite number (images are scaled to 0..1).")
            if name == "std" and v <= 0:
                raise DataError(
                    f"--std takes three numbers (R G B) > 0, got {v:g} for {channel}: inputs are divided by the std."
                )


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
    n_val, n_calib = len(labels) // 5, len(labels) // 10  # 70 / 10 / 20 train / calibration / validation
    val, calib, train = order[:n_val], order[n_val : n_val + n_calib], order[n_val + n_calib :]
    pixel = images[train].astype(np.float32) / 255.0
    mean = mean or tuple(float(pixel[:, c].mean()) for c in range(3))
    std = std or tuple(float(pixel[:, c].std()) for c in range(3))
    fp = _fingerprint("digits", resolution, seed, mean, std)  # the 1797 scans never change; torch is in every key
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
    fp = _fingerprint("arrays", root.name, seed, mean, std, CALIBRATION_SIZE)
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


# ---------------------------------------------------------------- ImageFolder


def _image_folder(
    root: Path, resolution: int, mean: tuple[float, ...], std: tuple[float, ...], seed: int, cache_dir: Path | None
) -> Dataset:
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"data directory {root} {what}; pass --data digits or an ImageFolder directory.")
    has_train, has_val = (root / "train").is_dir(), (root / "val").is_dir()
    if has_train != has_val:
        there, missing = ("train", "val") if has_train else ("val", "train")
        raise DataError(
            f"{root} has {there}/ but no {missing}/; add {root / missing}/ with the same class folders, "
            f"or put the class folders directly in {root}."
        )
    if has_train:
        classes, train_files = _list_classes(root / "train")
        val_classes, val_files = _list_classes(root / "val")
        if val_classes != classes:
            only = sorted(set(classes) ^ set(val_classes))
            raise DataError(
                f"{root}: train/ and val/ have different class folders ({', '.join(only[:3])} in only one); "
                "give both the same classes."
            )
        _check_per_class(root / "train", classes, train_files, MIN_TRAIN_PER_CLASS, "training")
        _check_per_class(root / "val", classes, val_files, MIN_VAL_PER_CLASS, "validation")
    else:
        classes, files = _list_classes(root)
        _check_per_class(
            root,
            classes,
            files,
            MIN_TRAIN_PER_CLASS + MIN_VAL_PER_CLASS,
            f"a split into training ({MIN_TRAIN_PER_CLASS}+) and validation ({MIN_VAL_PER_CLASS}+)",
        )
        train_files, val_files = _stratified_split(files, len(classes), seed)
    test_files: list[tuple[Path, int]] = []
    if has_train and (root / "test").is_dir():  # the held-out split, as a folder of its own
        test_classes, test_files = _list_classes(root / "test")
        if test_classes != classes:
            raise DataError(
                f"{root}: test/ and train/ have different class folders; give test/ the same classes, "
                "or remove it (a share of val/ is then held out)."
            )
    # The decoded pixels depend on the files' content, their split and label, the resolution and the decoder; the
    # data set's fingerprint (the key of every model trained or calibrated on it) adds the classes' names, the
    # normalization and the seed. Neither holds a path or a date: a moved or re-listed folder is the same data.
    check_decoded_fits(len(train_files) + len(val_files) + len(test_files), resolution, str(root))
    store = cache_dir / "data" if cache_dir is not None else None
    index = store / "files" / f"{_fingerprint(str(root.resolve()))}.json" if store is not None else None
    splits = {"train": train_files, "val": val_files, "test": test_files}
    content = decoded.content_key(splits, resolution, _version("pillow"), index)
    arrays = decoded.load(splits, resolution, content.key, store, str(root))
    content.save_index()  # once decoded: a folder with a bad image leaves nothing behind
    train, val, test = (Split(x, y) for x, y in arrays.values())
    pick = np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_SIZE]
    calib = Split(train.images[np.sort(pick)], train.labels[np.sort(pick)])
    fp = _fingerprint(content.key, tuple(classes), seed, mean, std, CALIBRATION_SIZE)
    return Dataset(
        root.name,
        tuple(classes),
        resolution,
        tuple(mean),
        tuple(std),
        train,
        val,
        calib,
        fp,  # type: ignore[arg-type]
        test if len(test) else None,
    )


# Peak bytes while a split is decoded, per byte it keeps: the decoded images and their stacked (or indexed) copy.
DECODE_PEAK = 2


def check_decoded_fits(images: int, resolution: int, source: str, memory: int | None = -1) -> None:
    """Refuse, before any allocation, a data set whose decoded images (uint8, images x 3 x res x res, about twice
    that while decoding) would not fit in half of the memory available (``hardware.MEMORY_SHARE``): one line
    naming --resolution, not a 30 GB allocation and a traceback. ``memory``: bytes (default: read now)."""
    from tuner import hardware

    memory = hardware.available_memory() if memory == -1 else memory
    need = images * 3 * resolution * resolution * DECODE_PEAK
    if memory is not None and need > memory * hardware.MEMORY_SHARE:
        fits = int(math.sqrt(memory * hardware.MEMORY_SHARE / (images * 3 * DECODE_PEAK)))
        raise DataError(
            f"--resolution {resolution}: the {images:,} images of {source} take "
            f"{hardware.gib(need // DECODE_PEAK)} decoded ({hardware.gib(need)} while decoding), more "
            f"than half of the {hardware.gib(memory)} of memory available; use --resolution "
            f"{max(MIN_RESOLUTION, min(fits, MAX_RESOLUTION))} or less, or fewer images."
        )


def _fingerprint(*parts: object) -> str:
    """A content hash of everything that makes the data (and so a model trained on it) what it is."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _list_classes(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        (p, i)
        for i, c in enumerate(classes)
        for p in sorted((root / c).rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    ]
    if len(classes) < 2:
        raise DataError(
            f"{root} has {len(classes)} class folder(s); an ImageFolder needs at least 2 "
            "(one sub-folder of images per class)."
        )
    if not files:
        raise DataError(f"{root} has no images in its class folders; add .jpg/.png files under {root}/<class>/.")
    counts = np.bincount([y for _, y in files], minlength=len(classes))
    empty = [classes[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(
            f"class folder {root / empty[0]} has no images ({len(empty)} empty class folder(s)); "
            f"add images ({', '.join(sorted(IMAGE_SUFFIXES))}) or remove the folder."
        )
    return classes, files


def _check_per_class(root: Path, classes: list[str], files: list[tuple[Path, int]], minimum: int, purpose: str) -> None:
    counts = np.bincount([y for _, y in files], minlength=len(classes))
    few = int(np.argmin(counts))
    if counts[few] < minimum:
        raise DataError(
            f"class {classes[few]!r} in {root} has {counts[few]} image(s); {purpose} needs at least "
            f"{minimum} per class: add images to {root / classes[few]}."
        )


def _stratified_split(
    files: list[tuple[Path, int]], num_classes: int, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """A fifth of each class (at least one image) for validation, the rest for training, fixed by the seed."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in range(num_classes):
        own = [f for f in files if f[1] == c]
        order = rng.permutation(len(own))
        n_val = max(MIN_VAL_PER_CLASS, len(own) // 5)
        val += [own[i] for i in sorted(order[:n_val])]
        train += [own[i] for i in sorted(order[n_val:])]
    return train, val
