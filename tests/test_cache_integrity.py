"""The cache checks what it reads: each entry records its files' sizes and sha256 when written, and an entry that
no longer matches (a flipped byte, a truncated file) is discarded and rebuilt with a one-line warning rather than
used. Temporary entries left by killed builds are removed by the next process that opens the cache; a live
builder's are not. Real builds throughout: the tiny CNN's baseline trained by ``load_workload``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY
from tuner.cache import MANIFEST, Cache, sha256_file
from tuner.claims import CLAIMS_DIR
from tuner.logs import to

pytestmark = pytest.mark.slow  # end to end: studies, exports and processes (pytest -m "not slow" skips)


def _load(cache: Path, lines: list[str]):
    from tuner.workload import load_workload
    from tuner.workload_spec import WorkloadSpec

    spec = WorkloadSpec(model=f"{TINY}:conv_net", data="digits", resolution=16, train_steps=5, cache_dir=str(cache))
    with to(lines.append):
        return load_workload(spec)


def _baseline_file(cache: Path) -> Path:
    (found,) = list(cache.glob("*/weights.pt"))
    return found


def _same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.fixture()
def trained(tmp_path):
    first: list[str] = []
    w = _load(tmp_path / "cache", first)
    weights = _baseline_file(tmp_path / "cache")
    assert (weights.parent / MANIFEST).is_file()
    return tmp_path / "cache", weights, w.state_dict


def _damaged(cache: Path, weights: Path, reference, damage) -> list[str]:
    digest = sha256_file(weights)
    damage(weights)
    assert sha256_file(weights) != digest
    lines: list[str] = []
    again = _load(cache, lines)
    warnings = [m for m in lines if m.startswith("warning: the cache entry")]
    assert len(warnings) == 1 and "weights.pt" in warnings[0] and "rebuilding" in warnings[0], lines
    assert any("training a" in m for m in lines), lines  # really rebuilt, not used as is
    assert _same_weights(again.state_dict, reference)
    assert (weights.parent / MANIFEST).is_file() and not _hidden(cache)
    quiet: list[str] = []
    _load(cache, quiet)  # the rebuilt entry is intact: a plain hit
    assert not [m for m in quiet if "warning" in m] and any("using the cached baseline" in m for m in quiet)
    return warnings


def test_a_flipped_byte_in_the_cached_baseline_is_rebuilt_with_a_warning(trained):
    cache, weights, reference = trained

    def flip(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))

    (line,) = _damaged(cache, weights, reference, flip)
    assert "sha256" in line


def test_a_truncated_cached_file_is_rebuilt_with_a_warning(trained):
    cache, weights, reference = trained

    def truncate(path: Path) -> None:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 3)

    (line,) = _damaged(cache, weights, reference, truncate)
    assert "bytes" in line


def test_an_entry_written_before_manifests_is_used_as_is(trained):
    """Caches written by an earlier version have no manifest: they are trusted (not rebuilt) and get one."""
    cache, weights, reference = trained
    (weights.parent / MANIFEST).unlink()
    lines: list[str] = []
    w = _load(cache, lines)
    assert not [m for m in lines if "warning" in m] and _same_weights(w.state_dict, reference)
    assert json.loads((weights.parent / MANIFEST).read_text())["files"]["weights.pt"][1] == sha256_file(weights)


_SLOW_BUILD = """
import sys, time
from pathlib import Path
from tuner.cache import Cache

def build(d):
    (d / "part").write_text("half")
    time.sleep(60)

Cache(Path(sys.argv[1])).entry(sys.argv[2], build)
"""


def _hidden(cache: Path) -> list[Path]:
    """What is hidden in the cache beside the claims' folder (tuner.claims), and in that folder."""
    claims = cache / CLAIMS_DIR
    return [p for p in cache.iterdir() if p.name.startswith(".") and p != claims] + (
        list(claims.iterdir()) if claims.is_dir() else []
    )


def test_a_killed_builds_temporary_entry_is_removed_by_the_next_run_and_a_live_ones_kept(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Three keys: builders of one key would take turns (its claim), these build at once.
    procs = [
        subprocess.Popen([sys.executable, "-c", _SLOW_BUILD, str(cache), f"0123456789abcdef012{i}"], env=env)
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(cache.glob(".0123456789abcdef012?-*/part"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        temps = {p.name for p in cache.glob(".0123456789abcdef012?-*")}
        assert len(temps) == 3
        procs[0].send_signal(signal.SIGKILL)
        procs[1].send_signal(signal.SIGTERM)
        for p in procs[:2]:
            p.wait(timeout=30)
        lines: list[str] = []
        with to(lines.append):
            Cache(cache)
        left = {p.name for p in cache.glob(".0123456789abcdef012?-*")}
        assert left == {n for n in temps if f"-{procs[2].pid}-" in n}  # the live builder's, only
        assert lines == [f"removed 2 unfinished cache entries left under {cache} by interrupted builds"]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    with to(lines.append):
        Cache(cache)
    assert not _hidden(cache)  # once its builder is gone, the last one goes too (and the killed builds' claims)
