"""One image file to pixels: decoded strictly (a truncated file or a decompression bomb is an error, not a grey
or a hang), converted to 8-bit RGB by its real bit depth, centre-cropped and resized, as uint8 CHW."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from tuner.errors import DataError, first_line

decodes = 0  # images this process has decoded: what the decoded-data cache saves is counted by it
_counting = threading.Lock()  # images are decoded on several threads
MAX_IMAGE_PIXELS = 89_478_485  # PIL's own default, set explicitly: a larger image is refused as a decompression bomb


def strict_pil() -> None:
    """A truncated file is an error (not silently grey-filled), and so is an image too large to be a photo."""
    import warnings

    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


DECODER = "rgb8-by-bit-depth/1"  # how pixels become 8-bit RGB (``rgb8``): a change re-decodes cached data sets


def load_image(path: Path, resolution: int) -> np.ndarray:
    """Centre-crop to a square, resize to resolution, HWC -> CHW uint8."""
    from PIL import Image

    global decodes
    with _counting:
        decodes += 1

    try:
        with Image.open(path) as im:
            im.load()  # decode it all: a truncated or corrupt file fails here, not half-read
            im = rgb8(im, path)
            w, h = im.size
            side = min(w, h)
            im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            im = im.resize((resolution, resolution), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(
            f"image {path} has more than {MAX_IMAGE_PIXELS:,} pixels (a possible decompression bomb); "
            "resize it, or remove it from the data."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:  # PIL's decoders raise all of these
        reason = first_line(err, 160, whole=True) or type(err).__name__
        raise DataError(f"cannot read image {path} ({reason}); remove or replace the file.") from None


def rgb8(im: Any, path: Path) -> Any:
    """8-bit RGB, scaled by the image's real bit depth. PIL's own ``convert("RGB")`` scales 1-, 2- and 4-bit
    images and keeps the high byte of 48-bit RGB and 16-bit grey + alpha PNGs, but clips 16-bit grey (mode
    I;16, or I) at 255: a 16-bit scan would be white where it is brighter than 1/257 of full scale. Grey of
    more than 8 bits is divided down here; floating-point pixels, which have no stated range, are refused."""
    from PIL import Image

    if im.mode == "F":
        raise DataError(
            f"image {path} holds floating-point pixels (PIL mode F), whose range is not defined; "
            "save it with 8- or 16-bit integer pixels, or remove it from the data."
        )
    if not (im.mode == "I" or im.mode.startswith("I;16")):
        return im.convert("RGB")
    pixels = np.asarray(im)
    bits = 16 if im.mode.startswith("I;16") else _declared_bits(im)
    if pixels.size and pixels.min() < 0:
        raise DataError(
            f"image {path} holds negative pixel values ({int(pixels.min())}, {bits}-bit signed); "
            "save it with unsigned 8- or 16-bit pixels, or remove it from the data."
        )
    scaled = np.rint(pixels.astype(np.float64) * (255.0 / (2**bits - 1))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")


def _declared_bits(im: Any) -> int:
    """The bits per sample of a mode-I image: a TIFF states them (16 or 32); a PNG's grey of more than 8 bits is
    16-bit (older PIL versions opened it as I)."""
    tags = getattr(im, "tag_v2", None)
    try:
        bits = tags.get(258) if tags is not None else None  # BitsPerSample
        bits = int(bits[0] if isinstance(bits, tuple) else bits) if bits is not None else 16
    except (TypeError, ValueError, IndexError):
        bits = 16
    return bits if 8 < bits <= 32 else 16
