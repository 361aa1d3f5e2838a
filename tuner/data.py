"""Data sets: the built-in offline ``digits`` and any ImageFolder directory.

Images are kept decoded as uint8 NCHW arrays (4x smaller than float) and normalized per
batch, so a trial never decodes a JPEG twice; decoded ImageFolders are cached on disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_RESOLUTION = {"digits": 32}  # digits are 8x8 scans: 32 px keeps the default study fast
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff"}
CALIBRATION_SIZE = 256  # ORT static quantization needs a few hundred samples, not more


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalize(self, images: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1) * 255.0
        return (images.astype(np.float32) - mean) / std

    def batches(self, split: Split, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(normalized float32 inputs, labels) in order; the last batch may be smaller."""
        for i in range(0, len(split), batch_size):
            yield self.normalize(split.images[i:i + batch_size]), split.labels[i:i + batch_size]

    def example(self, batch_size: int = 1) -> np.ndarray:
        """A normalized input batch of real validation images (repeated if the split is short)."""
        idx = np.arange(batch_size) % len(self.val)
        return self.normalize(self.val.images[idx])


def load_dataset(source: str, resolution: int | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, seed: int = 0, cache_dir: Path | None = None) -> Dataset:
    """``digits`` or a path to an ImageFolder (with ``train/`` and ``val/`` inside when present)."""
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and (len(value) != 3 or (name == "std" and min(value) <= 0)):
            raise DataError(f"--{name} takes three numbers (R G B){' > 0' if name == 'std' else ''}, got {value}.")
    if resolution is not None and not 8 <= resolution <= 2048:
        raise DataError(f"--resolution must be between 8 and 2048 pixels, got {resolution}.")
    if source == "digits":
        return _digits(resolution or DEFAULT_RESOLUTION["digits"], mean, std, seed)
    return _image_folder(Path(source), resolution or 224, mean or IMAGENET_MEAN, std or IMAGENET_STD, seed, cache_dir)


# ---------------------------------------------------------------- digits (scikit-learn, offline)


def _digits(resolution: int, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, seed: int) -> Dataset:
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    big = torch.nn.functional.interpolate(small, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = big.clamp(0, 255).round().to(torch.uint8).repeat(1, 3, 1, 1).numpy()  # 3 channels, as image models expect
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_val, n_calib = len(labels) // 5, len(labels) // 10  # 70 / 10 / 20 train / calibration / validation
    val, calib, train = order[:n_val], order[n_val:n_val + n_calib], order[n_val + n_calib:]
    pixel = images[train].astype(np.float32) / 255.0
    mean = mean or tuple(float(pixel[:, c].mean()) for c in range(3))
    std = std or tuple(float(pixel[:, c].std()) for c in range(3))
    fp = hashlib.sha256(f"digits:{resolution}:{seed}".encode()).hexdigest()[:16]
    return Dataset("digits", tuple(str(c) for c in range(10)), resolution, tuple(mean), tuple(std),  # type: ignore[arg-type]
                   Split(images[train], labels[train]), Split(images[val], labels[val]),
                   Split(images[calib], labels[calib]), fp)


# ---------------------------------------------------------------- ImageFolder


def _image_folder(root: Path, resolution: int, mean: tuple[float, ...], std: tuple[float, ...], seed: int,
                  cache_dir: Path | None) -> Dataset:
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; pass --data digits or an ImageFolder directory.")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train_files = _list_classes(root / "train")
        val_classes, val_files = _list_classes(root / "val")
        if val_classes != classes:
            raise DataError(f"{root}: train/ and val/ have different class folders; give both the same classes.")
    else:
        classes, files = _list_classes(root)
        order = np.random.default_rng(seed).permutation(len(files))
        n_val = max(len(classes), len(files) // 5)
        val_files = [files[i] for i in sorted(order[:n_val])]
        train_files = [files[i] for i in sorted(order[n_val:])]
    listing = "\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}:{y}" for p, y in train_files + val_files)
    fp = hashlib.sha256(f"{root.resolve()}:{resolution}\n{listing}".encode()).hexdigest()[:16]
    train, val = _decode_cached(train_files, val_files, resolution, fp, cache_dir)
    pick = np.random.default_rng(seed).permutation(len(train))[:CALIBRATION_SIZE]
    calib = Split(train.images[np.sort(pick)], train.labels[np.sort(pick)])
    return Dataset(root.name, tuple(classes), resolution, tuple(mean), tuple(std), train, val, calib, fp)  # type: ignore[arg-type]


def _list_classes(root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).rglob("*"))
             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s); an ImageFolder needs at least 2 "
                        "(one sub-folder of images per class).")
    if not files:
        raise DataError(f"{root} has no images in its class folders; add .jpg/.png files under {root}/<class>/.")
    return classes, files


def _decode_cached(train_files: list[tuple[Path, int]], val_files: list[tuple[Path, int]], resolution: int,
                   fp: str, cache_dir: Path | None) -> tuple[Split, Split]:
    cached = cache_dir / "data" / f"{fp}.npz" if cache_dir is not None else None
    if cached is not None and cached.is_file():
        with np.load(cached) as z:
            return Split(z["train_x"], z["train_y"]), Split(z["val_x"], z["val_y"])
    train, val = _decode(train_files, resolution), _decode(val_files, resolution)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.stem}.tmp.npz")
        np.savez(tmp, train_x=train.images, train_y=train.labels, val_x=val.images, val_y=val.labels)
        tmp.replace(cached)  # atomic: a concurrent worker never reads half a file
    return train, val


def _decode(files: list[tuple[Path, int]], resolution: int) -> Split:
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL releases the GIL while decoding
        images = list(pool.map(lambda f: _load_image(f[0], resolution), files))
    return Split(np.stack(images), np.asarray([y for _, y in files], dtype=np.int64))


def _load_image(path: Path, resolution: int) -> np.ndarray:
    """Centre-crop to a square, resize to resolution, HWC -> CHW uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            side = min(w, h)
            im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            im = im.resize((resolution, resolution), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"cannot read image {path} ({err}); remove or replace the file.") from None
