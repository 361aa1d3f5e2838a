"""An ImageFolder directory as a ``Dataset``: its class folders listed and checked, split into train / val (and a
test/ folder held out), decoded once per content and resolution (``tuner.decoded``) and memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuner import decoded
from tuner.dataset import (
    CALIBRATION_SIZE,
    Dataset,
    Split,
    check_decoded_fits,
    data_fingerprint,
)
from tuner.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
# The fewest images a class may have: one to validate on and two to train (and calibrate) on. With one
# ImageFolder and no train/ and val/, a fifth of each class (at least one image) is held out for validation.
MIN_TRAIN_PER_CLASS, MIN_VAL_PER_CLASS = 2, 1


def image_folder(
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
    index = store / "files" / f"{data_fingerprint(str(root.resolve()))}.json" if store is not None else None
    splits = {"train": train_files, "val": val_files, "test": test_files}
    content = decoded.content_key(splits, resolution, _version("pillow"), index)
    arrays = decoded.load(splits, resolution, content.key, store, str(root))
    content.save_index()  # once decoded: a folder with a bad image leaves nothing behind
    train, val, test = (Split(x, y) for x, y in arrays.values())
    pick = np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_SIZE]
    calib = Split(train.images[np.sort(pick)], train.labels[np.sort(pick)])
    fp = data_fingerprint(content.key, tuple(classes), seed, mean, std, CALIBRATION_SIZE)
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
