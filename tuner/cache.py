"""Content-addressed cache for expensive build steps (baseline, pruned+recovered weights, ONNX files).

A key is the SHA-256 of the sorted JSON of everything that determines the output, including
the key of the step's input, so keys chain: one pruned model serves every precision and
placement. Entries are written to a temporary directory and renamed into place, so workers
that share ``studies/`` never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]  # the docstring: what the code does is unchanged by it
    return ast.dump(tree).encode()


class Cache:
    def __init__(self, root: Path | None):
        self.root = root  # None: nothing is kept (each call builds into a fresh temporary directory)
        self.hits = 0
        self.misses = 0
        self._scratch: list[Path] = []

    def entry(self, key: str, build: Callable[[Path], None]) -> Path:
        """The directory holding ``key``'s files, calling ``build(dir)`` to fill it on a miss."""
        if self.root is None:
            out = Path(tempfile.mkdtemp(prefix="tuner-"))
            self._scratch.append(out)
            self.misses += 1
            build(out)
            return out
        final = self.root / key
        if final.is_dir():
            self.hits += 1
            return final
        self.misses += 1
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=self.root))
        try:
            build(tmp)
            os.replace(tmp, final)
        except OSError:
            if not final.is_dir():  # a real failure, not another worker that got there first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def cleanup(self) -> None:
        for d in self._scratch:
            shutil.rmtree(d, ignore_errors=True)
        self._scratch.clear()
