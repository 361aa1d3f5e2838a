"""The decoded data set every stage reads: ``Split`` and ``Dataset`` (normalized batches, an example input), its
content fingerprint, and the checks made before anything is decoded (the input's numbers, the memory it takes)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from tuner.errors import DataError

CALIBRATION_SIZE = 256  # ORT static quantization needs a few hundred samples, not more
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


def data_fingerprint(*parts: object) -> str:
    """A content hash of everything that makes the data (and so a model trained on it) what it is."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
