"""Content-addressed cache for expensive build steps (baseline, pruned+recovered weights, ONNX files).

A key is the SHA-256 of the sorted JSON of everything that determines the output, including
the key of the step's input, so keys chain: one pruned model serves every precision and
placement. Entries are written to a temporary directory and renamed into place, so workers
that share ``studies/`` never see half an entry; each carries a manifest of its files' sizes and
sha256, checked when read, so that an entry damaged on disk is rebuilt rather than used. A missing entry is built
under a claim (``tuner.claims``): of the workers that miss it at once, one builds it and the others wait and reuse it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuner.claims import make_claims, remove_stale

_log = logging.getLogger(__name__)


def make_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tensor_hash(state: dict[str, Any]) -> str:
    """A content hash of a state_dict's names and tensor bytes (the weights' part of a key)."""
    import torch

    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def code_id(*modules: str) -> str:
    """A hash of the code of the tuner's own modules that shape a cached output (training, pruning): an edited
    recipe never reuses what the old one built, while an edited comment or docstring does (the hash is of the
    syntax tree, docstrings left out)."""
    import importlib.util

    h = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        h.update(name.encode())
        h.update(_code(Path(origin)) if origin and Path(origin).is_file() else b"?")
    return h.hexdigest()[:20]


def _code(path: Path) -> bytes:
    import ast

    tree = ast.parse(path.read_bytes())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]  # the docstring: what the code does is unchanged by it
    return ast.dump(tree).encode()


class Cache:
    """Entries are built into a hidden temporary sibling (``.<key>-<host>-<pid>-xxxx``) and renamed into place,
    with a manifest of every file's size and sha256 written last; a hit is checked against it, and an entry that
    no longer matches (a flipped byte, a truncated or missing file) is discarded and rebuilt with a warning."""

    def __init__(self, root: Path | None, claims_url: str | None = None):
        self.root = root  # None: nothing is kept (each call builds into a fresh temporary directory)
        self.hits = 0
        self.misses = 0
        self.waited = 0.0  # seconds spent waiting for other workers' builds of entries this process needed
        # A miss is built under a claim (tuner.claims): one worker of a study builds it, the others wait and reuse.
        self.claims = make_claims(claims_url, root) if root is not None else None
        self._scratch: list[Path] = []
        self._checked: set[Path] = set()  # entries verified by this process (each is read once per process)
        if root is not None:
            sweep(root)

    def entry(self, key: str, build: Callable[[Path], None]) -> Path:
        """The directory holding ``key``'s files, calling ``build(dir)`` to fill it on a miss."""
        if self.root is None:
            out = Path(tempfile.mkdtemp(prefix="tuner-"))
            self._scratch.append(out)
            self.misses += 1
            build(out)
            return out
        final = self.root / key
        if final.is_dir() and self._intact(final):
            self.hits += 1
            return final
        assert self.claims is not None
        with self.claims.hold(key) as waited:
            self.waited += waited
            if final.is_dir() and self._intact(final):  # built by the worker that held the claim
                self.hits += 1
                if waited:
                    _log.info(f"cache entry {key}: reusing what another worker built (waited {waited:.0f} s)")
                return final
            if waited:
                _log.info(f"cache entry {key}: the other worker's build did not finish; building it here")
            return self._build(key, final, build)

    def _build(self, key: str, final: Path, build: Callable[[Path], None]) -> Path:
        assert self.root is not None
        self.misses += 1
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = owned_temp_dir(self.root, f".{key}-")
        try:
            build(tmp)
            write_manifest(tmp)
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # a real failure, not another worker that got there first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._checked.add(final)
        return final

    def _intact(self, entry: Path) -> bool:
        """Whether a cached entry still holds what was written; a damaged one is moved aside and removed (the
        caller rebuilds it). An entry written before manifests existed gets one now, trusted as found."""
        if entry in self._checked:
            return True
        problem = check_manifest(entry)
        if problem is None:
            self._checked.add(entry)
            return True
        if problem == NO_MANIFEST:
            with contextlib.suppress(OSError):  # a read-only shared cache: used unverified, as before
                write_manifest(entry)
            self._checked.add(entry)
            return True
        _log.warning(f"warning: the cache entry {entry} is damaged ({problem}); discarding and rebuilding it")
        _discard(entry)
        return False

    def cleanup(self) -> None:
        for d in self._scratch:
            shutil.rmtree(d, ignore_errors=True)
        self._scratch.clear()


# ---------------------------------------------------------------- what an entry holds, checked when read

MANIFEST = ".manifest.json"  # {"files": {relative path: [bytes, sha256]}}, written last into a new entry
NO_MANIFEST = "no manifest"


def _files(entry: Path) -> list[Path]:
    return sorted(p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(MANIFEST))


def write_manifest(entry: Path) -> None:
    files = {p.relative_to(entry).as_posix(): [p.stat().st_size, sha256_file(p)] for p in _files(entry)}
    tmp = entry / f"{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps({"files": files}, sort_keys=True))
    os.replace(tmp, entry / MANIFEST)


def check_manifest(entry: Path) -> str | None:
    """None when every recorded file is there with its size and sha256 (hashing is cheap beside what reads the
    files: a few MB take milliseconds, and a flipped byte keeps the size); else what is wrong, in a few words."""
    try:
        record = json.loads((entry / MANIFEST).read_text())
        files = record["files"]
        if not isinstance(files, dict):
            raise ValueError(MANIFEST)
    except FileNotFoundError:
        return NO_MANIFEST
    except Exception:  # noqa: BLE001 - a truncated or garbled manifest is damage like any other
        return f"{MANIFEST} unreadable"
    try:
        for name, (size, digest) in sorted(files.items()):
            path = entry / name
            if not path.is_file():
                return f"{name} missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} were written"
            if sha256_file(path) != digest:
                return f"{name} content changed (sha256)"
    except (OSError, TypeError, ValueError) as err:
        return f"unreadable: {type(err).__name__}"
    return None


def _discard(entry: Path) -> None:
    """Move a damaged entry aside first (a rename is atomic: no reader sees it half removed), then remove it."""
    aside = entry.with_name(f".{entry.name}-bad-{_owner()}-{os.urandom(4).hex()}")
    try:
        os.replace(entry, aside)
    except OSError:  # another process got there first
        return
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------- leftovers of killed builds

STALE_SECONDS = 24 * 3600  # a temporary entry this old is a leftover whoever wrote it (no build takes a day)
_ENTRY_TEMP = r"\.[0-9a-f]{20}-(?:bad-)?"  # .<key>- (a build) or .<key>-bad- (a damaged entry being removed)


def _owner() -> str:
    return f"{re.sub(r'[^A-Za-z0-9.]', '_', socket.gethostname())[:40]}-{os.getpid()}"


def owned_temp_dir(parent: Path, prefix: str) -> Path:
    """A new temporary directory ``<prefix><host>-<pid>-xxxx`` in ``parent``: named for its writer, so that a
    later run can tell a killed writer's leftover from a live one's (``remove_leftovers``)."""
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_owner()}-", dir=parent))


def remove_leftovers(parent: Path, prefix: str, stale_seconds: float) -> int:
    """Remove the temporary directories in ``parent`` whose names start with the regex ``prefix`` and whose writer
    is gone: a process of this host that no longer runs, or any writer once the directory is older than
    ``stale_seconds`` (another host's, where a pid says nothing, as on a shared network file system, or one named
    before writers were named). A live writer's directory is never touched. Returns how many were removed."""
    pattern = re.compile(f"^{prefix}(?:(?P<host>[A-Za-z0-9._]+)-(?P<pid>\\d+)-)?[A-Za-z0-9_]+$")
    try:
        found = [p for p in parent.iterdir() if p.name.startswith(".")]
    except OSError:
        return 0
    host, now, removed = _owner().rsplit("-", 1)[0], time.time(), 0
    for path in found:
        m = pattern.match(path.name)
        if m is None or not path.is_dir() or path.is_symlink():
            continue
        try:
            dead = m["host"] == host and not _alive(int(m["pid"]))
            if dead or now - path.stat().st_mtime > stale_seconds:
                shutil.rmtree(path)
                removed += 1
        except OSError:
            continue  # gone already, or not ours to remove
    return removed


def sweep(root: Path) -> int:
    """The temporary entries that killed builds left under the cache ``root``, removed (``remove_leftovers``)."""
    removed = remove_leftovers(root, _ENTRY_TEMP, STALE_SECONDS)
    remove_stale(root)  # their claims' files too
    if removed:
        _log.info(
            f"removed {removed} unfinished cache entr{'y' if removed == 1 else 'ies'} left under {root} by "
            "interrupted builds"
        )
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True
