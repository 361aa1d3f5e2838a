"""An ImageFolder's splits decoded once per (file content, resolution, decoder) and kept as raw .npy arrays that
every process memory-maps: the trials, export, verify and the re-measure share one copy in the page cache
instead of each holding its own.

The key is the images' content (the sha256 of each file's bytes, with its split and label), not their paths or
dates: a moved or re-listed folder decodes nothing, an edited image decodes again. So that listing a large
folder again hashes nothing, each folder keeps an index of its files' stat (size, mtime, ctime, inode) and their
sha256; a file whose stat differs is hashed again. An entry is written into a temporary directory and renamed
into place (no reader sees half of one), with a manifest of each array's size, sha256 and stat when written;
see ``_damage`` for how a reader checks it."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.cache import make_key, owned_temp_dir, sha256_file, sweep
from tuner.errors import DataError
from tuner.images import DECODER, load_image, strict_pil

_log = logging.getLogger(__name__)

Files = Sequence[tuple[Path, int]]  # (image file, class index) in the split's order
Arrays = tuple[np.ndarray, np.ndarray]  # (uint8 N x 3 x H x W images, int64 N labels)
FORMAT = "tuner-decoded/1"
MANIFEST = "decoded.json"
# Linux stamps mtime and ctime from a coarse clock (a few ms): a second write in the same tick leaves a file's stat
# as it was. A stat this close to the file's last change is not trusted later (git's "racily clean" entries), and
# a new entry is published no sooner than this after its last write.
RACY_NS = 100_000_000
CHUNK = 256  # images decoded per step: memory stays bounded while the arrays fill


@dataclass(frozen=True)
class Content:
    """A folder's decoded arrays by content: their key, and the folder's stat index to keep once they are decoded
    (a folder with a bad image leaves nothing behind)."""

    key: str
    index: Path | None
    settled: dict[str, list] | None  # None: the index on disk is current

    def save_index(self) -> None:
        if self.index is not None and self.settled is not None:
            _write_json(self.index, {"format": FORMAT, "files": self.settled})


def content_key(splits: dict[str, Files], resolution: int, pillow: str, index: Path | None) -> Content:
    """The key of the decoded arrays: each split's files by content and label, the resolution and the decoder
    (its rules and PIL's version). ``index``: the folder's stat -> sha256 index (None: hash every file)."""
    every = [path for files in splits.values() for path, _ in files]
    digests, settled = _digests(every, index)
    h = hashlib.sha256()
    for name, files in splits.items():
        h.update(f"split {name}\n".encode())
        for path, label in files:
            h.update(f"{digests[str(path)]}:{label}\n".encode())
    key = make_key(format=FORMAT, decoder=DECODER, pillow=pillow, resolution=resolution, files=h.hexdigest())
    return Content(key, index, settled)


def load(splits: dict[str, Files], resolution: int, key: str, root: Path | None, source: str) -> dict[str, Arrays]:
    """The decoded splits, memory-mapped from ``root/key`` (decoded and written there on a miss); with ``root``
    None, decoded into memory and kept nowhere. ``source``: the folder, as the line that says it is decoded names
    it."""
    count = sum(len(files) for files in splits.values())
    if root is None:
        _log.info(f"decoding {count:,} images of {source} at {resolution} px (no cache directory: kept in memory only)")
        return {
            name: (_decode(files, resolution, np.empty(_shape(files, resolution), np.uint8)), _labels(files))
            for name, files in splits.items()
        }
    entry = root / key
    if entry.is_dir():
        problem = _damage(entry)
        if problem is None:
            try:
                return _open(entry, splits, resolution)
            except (OSError, ValueError) as err:  # bytes as recorded, but not the arrays this folder needs
                problem = f"unreadable: {type(err).__name__}"
        _log.warning(f"warning: the decoded images in {entry} are damaged ({problem}); decoding them again")
        _discard(entry)
    created = [d for d in (root, *root.parents) if not d.exists()]  # removed again if the decode fails
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = owned_temp_dir(root, f".{key}-")
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        _log.info(f"note: cannot write decoded images in {root} ({err.strerror})")  # a read-only cache: verify's
        return load(splits, resolution, key, None, source)
    sweep(root)  # what killed decodes left behind
    _log.info(f"decoding {count:,} images of {source} at {resolution} px, once: kept in {entry} for every process")
    try:
        for name, files in splits.items():  # decoded straight into the files: never held whole in memory
            images = np.lib.format.open_memmap(
                tmp / f"{name}_images.npy", mode="w+", dtype=np.uint8, shape=_shape(files, resolution)
            )
            _decode(files, resolution, images)
            images.flush()
            del images
            np.save(tmp / f"{name}_labels.npy", _labels(files))
        _write_manifest(tmp)
        with contextlib.suppress(OSError):  # another process published it first: theirs is the same content
            os.replace(tmp, entry)
    except BaseException:  # a bad image (or Ctrl-C): the folders this decode made go with it
        shutil.rmtree(tmp, ignore_errors=True)
        for d in created:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _open(entry, splits, resolution)


# ---------------------------------------------------------------- the files' content, by an index of their stat


def _stat(path: Path) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _unreadable(path: Path, err: OSError) -> DataError:
    return DataError(f"cannot read image {path} ({err.strerror or type(err).__name__}); remove or replace the file.")


def _hash(path: Path) -> str:
    try:
        return sha256_file(path)
    except OSError as err:  # as decoding it would: one line naming the file
        raise _unreadable(path, err) from None


def _digests(paths: list[Path], index: Path | None) -> tuple[dict[str, str], dict[str, list] | None]:
    """({path: sha256 of its bytes}, the index to write or None): from the index where the file's stat is the one
    recorded, else read."""
    known: dict[str, list] = {}
    if index is not None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):  # no index, or a damaged one: rebuilt
            known = dict(json.loads(index.read_text())["files"])
    out, stats, missing = {}, {}, []
    for path in paths:
        try:
            name, stat = str(path), _stat(path)
        except OSError as err:  # gone since it was listed
            raise _unreadable(path, err) from None
        stats[name] = stat
        kept = known.get(name)
        if isinstance(kept, list) and len(kept) == 5 and kept[:4] == stat and isinstance(kept[4], str):
            out[name] = kept[4]
        else:
            missing.append(path)
    if missing:
        with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL on large buffers
            out.update(zip(map(str, missing), pool.map(_hash, missing)))
    if index is None or not missing:
        return out, None
    now = time.time_ns()
    return out, {name: [*stat, out[name]] for name, stat in stats.items() if now - max(stat[1:3]) > RACY_NS}


def _write_json(path: Path, record: dict) -> None:
    """Atomically (a reader sees the old file or the new), and only where it can: a read-only cache is read."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- decoding, into memory or into an entry


def _shape(files: Files, resolution: int) -> tuple[int, int, int, int]:
    return (len(files), 3, resolution, resolution)


def _labels(files: Files) -> np.ndarray:
    return np.asarray([y for _, y in files], dtype=np.int64)


def _decode(files: Files, resolution: int, images: np.ndarray) -> np.ndarray:
    """``files`` decoded into ``images`` (in memory, or a file's map being written), a chunk at a time."""
    if files:
        strict_pil()
        with ThreadPoolExecutor(max_workers=4) as pool:  # PIL releases the GIL while decoding
            for start in range(0, len(files), CHUNK):
                part = files[start : start + CHUNK]
                images[start : start + len(part)] = np.stack(
                    list(pool.map(lambda f: load_image(f[0], resolution), part))
                )
    return images


def _arrays(entry: Path) -> list[Path]:
    return sorted(p for p in entry.iterdir() if p.suffix == ".npy")


def _write_manifest(entry: Path) -> None:
    """Each array's size, sha256 and stat; written once the arrays are complete and, so that a later write could
    not keep their stat, at least RACY_NS after the last of them."""
    arrays = _arrays(entry)
    files = {p.name: [p.stat().st_size, sha256_file(p)] for p in arrays}
    last = max((max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in arrays), default=0)
    time.sleep(max(0.0, (last + RACY_NS - time.time_ns()) / 1e9))
    (entry / MANIFEST).write_text(
        json.dumps({"format": FORMAT, "files": files, "stat": {p.name: _stat(p) for p in arrays}})
    )


def _damage(entry: Path) -> str | None:
    """None when every array is there with the size and content the manifest recorded; else what is wrong.

    Cheaper than tuner.cache's sha256 of every file on every first read (a 60,000-photo split at 224 px is 9 GB,
    read again by every trial's process): an array whose stat is still the one recorded when it was hashed has not
    been written since (any write, truncation or replacement changes its ctime, which no user can set back), so
    its recorded sha256 holds; an array whose stat changed (copied, touched, written) is hashed again. Damage below
    the file system (a failing disk under an unchanged file) is not seen, as it is not in any file read."""
    try:
        record = json.loads((entry / MANIFEST).read_text())
        files, stats = record["files"], record["stat"]
        if record.get("format") != FORMAT or not files:
            return f"{MANIFEST} of another format"
        for name, (size, digest) in sorted(files.items()):
            path = entry / name
            if not path.is_file():
                return f"{name} missing"
            stat = _stat(path)
            if stat[0] != size:
                return f"{name} has {stat[0]} bytes, {size} were written"
            if stat != stats.get(name) and sha256_file(path) != digest:
                return f"{name} content changed (sha256)"
    except FileNotFoundError:
        return f"{MANIFEST} missing"
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        return f"{MANIFEST} unreadable ({type(err).__name__})"
    return None


def _open(entry: Path, splits: dict[str, Files], resolution: int) -> dict[str, Arrays]:
    """The splits memory-mapped read-only: pages come from the page cache, shared by every process."""
    out = {}
    for name, files in splits.items():
        images = np.load(entry / f"{name}_images.npy", mmap_mode="r")
        labels = np.load(entry / f"{name}_labels.npy")  # small: read whole
        if images.dtype != np.uint8 or images.shape != _shape(files, resolution) or len(labels) != len(files):
            raise ValueError(f"{name}: {images.shape} {images.dtype} images, {len(labels)} labels")
        out[name] = (images, labels)
    return out


def _discard(entry: Path) -> None:
    """Moved aside first (renamed over an empty directory named for this process: no reader sees it half
    removed, and ``sweep`` knows it for a leftover), then removed."""
    aside = owned_temp_dir(entry.parent, f".{entry.name}-bad-")
    try:
        os.replace(entry, aside)
    except OSError:  # another process got there first
        aside.rmdir()
        return
    shutil.rmtree(aside, ignore_errors=True)
