"""A corruption set made from the validation split (issue 30, item 2): every validation image under five common
corruptions at one fixed severity (Gaussian noise, Gaussian blur, JPEG, contrast, a resize mismatch), by kornia,
deterministic for a seed. Made once per (data fingerprint, resolution, seed, recipe) into the content-addressed
cache beside the decoded data (``<cache>/data/``), and memory-mapped read-only by every trial's process.

Why these: compressed and quantized models lose more under common corruptions and resize mismatches than their
clean top-1 says (Liebenwein et al., MLSys 2021; RobustMQ, arXiv 2308.02350). One severity, near ImageNet-C's
middle, scaled to the resolution where it is spatial (blur, resize): the figure compares trials with each other
and with the baseline, not with published ImageNet-C numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner import progress
from tuner.cache import Cache, code_id, make_key
from tuner.dataset import Dataset, Split
from tuner.errors import ConfigError

FORMAT = "tuner-corruptions/1"
KINDS = ("gaussian_noise", "gaussian_blur", "jpeg", "contrast", "resize")
NOISE_STD = 0.08  # on pixels in 0..1 (ImageNet-C's Gaussian noise: 0.08 at severity 1, 0.18 at 3)
BLUR_SIGMA_AT_224 = 2.0  # pixels at 224 px (ImageNet-C's blur severity 2-3), scaled with the resolution
MIN_BLUR_SIGMA = 0.7  # below this a 3-pixel kernel barely blurs: small images still get a real blur
JPEG_QUALITY = 20  # ImageNet-C's JPEG severity 2-3 (quality 18-15)
CONTRAST = 0.4  # the deviation from the image's mean kept (ImageNet-C's contrast: 0.4 at severity 1-2)
RESIZE_FACTOR = 0.5  # down to half the side (antialiased), then up again (bilinear): a deployment resize mismatch
CHUNK = 128  # images corrupted at a time: memory stays bounded
INSTALL = "pip install 'kornia>=0.8' (tuner's extra: pip install 'tuner[robust]')"


def missing() -> str | None:
    """Why the corruption set cannot be made here (kornia not installed), as one line; None when it can.
    Torch-free (the study's process checks it before anything loads)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("kornia") is not None
    except (ImportError, ValueError):  # a package shadowed or blocked in sys.modules
        found = False
    return None if found else f"corruption robustness needs kornia, which is not installed: {INSTALL}"


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the corrupted pixels, apart from the source images (all of it in the key)."""

    resolution: int
    seed: int

    @property
    def blur_sigma(self) -> float:
        return max(MIN_BLUR_SIGMA, BLUR_SIGMA_AT_224 * self.resolution / 224)

    def params(self) -> dict[str, float | int]:
        return {
            "noise_std": NOISE_STD,
            "blur_sigma": round(self.blur_sigma, 4),
            "jpeg_quality": JPEG_QUALITY,
            "contrast": CONTRAST,
            "resize_factor": RESIZE_FACTOR,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Corrupted:
    """The set: ``split`` holds each corruption's copy of the validation split in turn (``kinds`` in order, each
    ``per_kind`` images long); ``key`` names its cache entry (None: made in memory, no cache)."""

    split: Split
    kinds: tuple[str, ...]
    per_kind: int
    key: str | None
    params: dict[str, float | int]
    made_seconds: float | None  # None: read from the cache

    def kind_of(self, rows: slice) -> np.ndarray:
        """The corruption's index of each row in ``rows``."""
        return np.arange(rows.start, rows.stop) // self.per_kind


def key(data: Dataset, seed: int) -> str:
    """The cache key: the data (its fingerprint: content, classes, normalization, split seed and held-out share,
    so the validation split itself), the resolution, the seed, the recipe's numbers, kornia's and torch's versions
    and this module's code."""
    import kornia
    import torch

    return make_key(
        format=FORMAT,
        data=data.fingerprint,
        resolution=data.resolution,
        images=len(data.val),
        kinds=KINDS,
        params=Recipe(data.resolution, seed).params(),
        kornia=kornia.__version__,
        torch=torch.__version__,
        code=code_id("tuner.corruptions"),
    )


_loaded: dict[str, Corrupted] = {}  # per process: each trial's process maps the set once


def load(data: Dataset, seed: int, cache_root: Path | None, claims: str | None) -> Corrupted:
    """The corruption set of ``data``'s validation split, from ``<cache_root>/data/<key>`` (made there on a miss,
    once for every worker of a study: ``tuner.cache.Cache.entry``); with ``cache_root`` None, made in memory. Making
    it is told as long work (``tuner.progress.say``: in a trial's process, the line its parent draws)."""
    if data.preprocessed:
        raise ConfigError(
            "corruptions apply to uint8 pixels; this data was given as float inputs ready for the model: "
            "pass uint8 images (N x 3 x H x W, 0..255) to measure corruption_drop."
        )
    problem = missing()
    if problem:
        raise ConfigError(problem)
    import time

    k = key(data, seed)
    if k in _loaded:
        return _loaded[k]
    recipe = Recipe(data.resolution, seed)
    n = len(data.val)
    made: list[float] = []

    def build(out: Path) -> None:
        start = time.perf_counter()
        progress.say(
            f"making the corruption set once: {len(KINDS)} corruptions of the {n:,} validation images at "
            f"{data.resolution} px ({', '.join(KINDS)})"
        )
        images = np.lib.format.open_memmap(
            out / "images.npy", mode="w+", dtype=np.uint8, shape=(len(KINDS) * n, 3, data.resolution, data.resolution)
        )
        for i, kind in enumerate(KINDS):
            for s in range(0, n, CHUNK):
                part = np.asarray(data.val.images[s : s + CHUNK])
                images[i * n + s : i * n + s + len(part)] = corrupt(part, kind, recipe, s // CHUNK)
        images.flush()
        del images
        np.save(out / "labels.npy", np.tile(np.asarray(data.val.labels, np.int64), len(KINDS)))
        (out / "corruptions.json").write_text(
            json.dumps({"format": FORMAT, "kinds": list(KINDS), "per_kind": n, "params": recipe.params()})
        )
        made.append(time.perf_counter() - start)

    root = cache_root / "data" if cache_root is not None else None
    entry = Cache(root, claims).entry(k, build)
    split = Split(np.load(entry / "images.npy", mmap_mode="r"), np.load(entry / "labels.npy"))
    found = Corrupted(split, KINDS, n, k if root is not None else None, recipe.params(), made[0] if made else None)
    if root is not None:
        _loaded[k] = found
    return found


def corrupt(images: np.ndarray, kind: str, recipe: Recipe, chunk: int) -> np.ndarray:
    """``images`` (uint8 N x 3 x H x W) under one corruption, as uint8; the noise is drawn from ``recipe.seed``
    and the chunk's index (the same pixels whoever makes the set)."""
    import torch
    from kornia.augmentation import RandomGaussianNoise
    from kornia.enhance import adjust_contrast_with_mean_subtraction, jpeg_codec_differentiable
    from kornia.filters import gaussian_blur2d
    from kornia.geometry.transform import resize

    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    side = x.shape[-1]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed * 1_000_003 + chunk)
        if kind == "gaussian_noise":
            y = RandomGaussianNoise(mean=0.0, std=NOISE_STD, p=1.0)(x)
        elif kind == "gaussian_blur":
            sigma = recipe.blur_sigma
            size = 2 * int(np.ceil(3 * sigma)) + 1
            y = gaussian_blur2d(x, (size, size), (sigma, sigma), border_type="reflect")
        elif kind == "jpeg":
            y = jpeg_codec_differentiable(x, torch.tensor([float(JPEG_QUALITY)]))
        elif kind == "contrast":
            y = adjust_contrast_with_mean_subtraction(x, CONTRAST)
        elif kind == "resize":
            small = max(1, round(side * RESIZE_FACTOR))
            y = resize(resize(x, (small, small), antialias=True), (side, side), interpolation="bilinear")
        else:
            raise ValueError(f"unknown corruption {kind!r}; known: {', '.join(KINDS)}")
    return y.clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8).numpy()
