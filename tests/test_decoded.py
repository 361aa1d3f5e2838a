"""An ImageFolder decoded once per content and resolution and memory-mapped by every process (tuner.decoded): a
second load, another process and a moved folder decode nothing; an edited image and a damaged entry decode again.
Decodes are counted by tuner.images.decodes, which load_image increments."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tuner.images as images
from tests.conftest import ROOT, run_tuner
from tuner.data import load_dataset
from tuner.decoded import MANIFEST, RACY_NS
from tuner.logs import to

RES = 12


def _folder(root: Path, classes: int = 2, per_class: int = 6) -> Path:
    """BMP files (uncompressed: an edited image keeps its size), a colour per class; train/ and val/."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("val", per_class // 2)):
        for c in range(classes):
            (root / part / f"c{c}").mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
                pixels[:, :, c] += 150
                Image.fromarray(pixels).save(root / part / f"c{c}" / f"{i}.bmp")
    time.sleep(2 * RACY_NS / 1e9)  # files this fresh are hashed again at each load, by design (tuner.decoded)
    return root


def _load(root: Path, cache: Path | None, log: list[str] | None = None):
    with to((log if log is not None else []).append):
        return load_dataset(str(root), RES, cache_dir=cache)


def _decoded(fn):
    before = images.decodes
    out = fn()
    return out, images.decodes - before


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "data").iterdir() if (p / MANIFEST).is_file())


def test_a_folder_is_decoded_once_and_memory_mapped_by_every_process(tmp_path):
    root, cache = _folder(tmp_path / "images"), tmp_path / "cache"
    log: list[str] = []
    first, n = _decoded(lambda: _load(root, cache, log))
    assert n == 18 and len(first.train) + len(first.val) == 18  # 12 train, 6 val (too few to hold any out)
    assert [line for line in log if line.startswith("decoding 18 images")], log
    (index,) = (cache / "data" / "files").iterdir()
    indexed = index.stat().st_mtime_ns
    again, n = _decoded(lambda: _load(root, cache))
    assert n == 0 and again.fingerprint == first.fingerprint
    assert np.array_equal(again.train.images, first.train.images) and np.array_equal(again.val.images, first.val.images)
    assert index.stat().st_mtime_ns == indexed  # listed again: every file's stat as indexed, nothing hashed again
    for split in (first.train, again.train):  # mapped from the cache's one file, read-only: the page cache's pages
        assert isinstance(split.images, np.memmap) and not split.images.flags.owndata
        assert not split.images.flags.writeable
        assert Path(split.images.filename).parent == _entries(cache)[0]
    code = (
        "import sys, numpy as np, tuner.images as im; from pathlib import Path; from tuner.data import load_dataset; "
        f"d = load_dataset({str(root)!r}, {RES}, cache_dir=Path({str(cache)!r})); "
        "print(im.decodes, isinstance(d.train.images, np.memmap), d.fingerprint)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.stdout.split() == ["0", "True", first.fingerprint], r.stderr
    moved = tmp_path / "moved"
    shutil.move(root, moved)  # the same content elsewhere: hashed (a new path), not decoded
    there, n = _decoded(lambda: _load(moved, cache))
    assert n == 0 and there.fingerprint == first.fingerprint
    uncached, n = _decoded(lambda: _load(moved, None))  # no cache: decoded into memory, the same data set
    assert n == 18 and uncached.fingerprint == first.fingerprint and not isinstance(uncached.train.images, np.memmap)
    assert len(_entries(cache)) == 1


def test_an_edited_image_is_decoded_again_a_touched_one_is_not(tmp_path):
    from PIL import Image

    root, cache = _folder(tmp_path / "images"), tmp_path / "cache"
    first, _ = _decoded(lambda: _load(root, cache))
    image = root / "train" / "c0" / "0.bmp"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # touched: a new date, the same bytes
    touched, n = _decoded(lambda: _load(root, cache))
    assert n == 0 and touched.fingerprint == first.fingerprint
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(image)  # new pixels, the same size, the old date back
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image.stat().st_size == st.st_size and image.stat().st_mtime_ns == st.st_mtime_ns
    edited, n = _decoded(lambda: _load(root, cache))
    assert n == 18 and edited.fingerprint != first.fingerprint
    row = next(i for i in range(len(edited.train)) if (edited.train.images[i] == 7).all())
    assert not (first.train.images[row] == 7).all()
    assert len(_entries(cache)) == 2


def _flip(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - 5)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))


DAMAGE = {
    "flipped byte": lambda e: _flip(e / "train_images.npy"),
    "truncated array": lambda e: os.truncate(e / "val_images.npy", 100),
    "missing array": lambda e: (e / "train_labels.npy").unlink(),
    "garbled manifest": lambda e: (e / MANIFEST).write_text("{not json"),
    "manifest of other files": lambda e: (e / MANIFEST).write_text(json.dumps({"format": "x", "files": {}})),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_decoded_again_not_crashed_on(tmp_path, damage):
    root, cache = _folder(tmp_path / "images"), tmp_path / "cache"
    first, _ = _decoded(lambda: _load(root, cache))
    reference = (np.array(first.train.images), np.array(first.val.images))
    DAMAGE[damage](_entries(cache)[0])
    log: list[str] = []
    again, n = _decoded(lambda: _load(root, cache, log))
    assert n == 18 and any("damaged" in line for line in log), log
    assert np.array_equal(again.train.images, reference[0]) and np.array_equal(again.val.images, reference[1])
    assert again.fingerprint == first.fingerprint
    assert [p.name for p in (cache / "data").iterdir() if p.name.startswith(".")] == []  # nothing left aside
    _, n = _decoded(lambda: _load(root, cache))
    assert n == 0


@pytest.mark.slow
def test_a_study_its_export_and_verify_decode_the_folder_once(tmp_path):
    """The trial's process decodes the folder; the re-measure, export and verify map the same arrays."""
    root, studies = _folder(tmp_path / "images", classes=3, per_class=10), tmp_path / "studies"
    run = run_tuner(
        "--model",
        f"{ROOT}/tests/tiny_models.py:conv_net",
        "--data",
        str(root),
        "--resolution",
        "16",
        "--train-steps",
        "30",
        "--n-trials",
        "1",
        "--remeasure-rounds",
        "1",
        "--study",
        "once",
        "--studies-dir",
        str(studies),
    )
    assert run.returncode == 0, run.stderr
    out = tmp_path / "deploy"
    export = run_tuner("export", "--study", "once", "--studies-dir", str(studies), "--trial", "0", "--out", str(out))
    assert export.returncode == 0, export.stderr
    verify = run_tuner("verify", str(out), "--latency-tolerance", "1.0")
    assert verify.returncode in (0, 1), verify.stderr  # 1: latency on a busy host; the data is what is checked
    decoding = [line for r in (run, export, verify) for line in r.stderr.splitlines() if line.startswith("decoding")]
    assert len(decoding) == 1 and "45 images" in decoding[0], decoding  # 30 train + 15 val
    assert len(_entries(studies / "cache")) == 1
