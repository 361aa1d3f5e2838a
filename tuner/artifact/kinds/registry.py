"""The export kinds, in the order an export tries them: the first that serves the candidate and saves it is the
export's form, recorded as ``artifact.kind`` in config.yaml; verify and the README find the kind by that name.

To add a kind (a TensorRT engine, a new runtime's native file): write one module beside these, a subclass of
``tuner.artifact.kinds.base.ExportKind`` (``serves``, ``save``, ``load``, ``code``, ``serve_code``, and
``readme_files`` / ``verify`` where it has more files or checks of its own), put its name in ``tuner/names.py``,
and add one line to ``_KINDS`` below, ahead of any kind that also serves its candidates. Nothing else changes:
export, verify and the README go through this registry. ``register`` adds a kind at run time (ahead of all), as
tests/test_export_kinds.py does with a toy kind."""

from __future__ import annotations

from tuner.artifact.kinds.base import ExportKind
from tuner.artifact.kinds.onnx import Onnx
from tuner.artifact.kinds.openvino_ir import OpenVinoIR
from tuner.artifact.kinds.state_dict import StateDict
from tuner.artifact.kinds.torch_export import TorchProgram
from tuner.errors import ConfigError

_KINDS: list[ExportKind] = [
    OpenVinoIR(),  # before onnx: an OpenVINO placement's ONNX file is saved as its IR
    Onnx(),
    TorchProgram(),  # --torch-format export; where torch.export fails, the state_dict takes it
    StateDict(),
]


def kinds() -> tuple[ExportKind, ...]:
    return tuple(_KINDS)


def get(name: str, source: str = "config.yaml") -> ExportKind:
    """The kind recorded as ``name``; ConfigError (exit 2) for one this tuner does not know."""
    for kind in _KINDS:
        if kind.name == name:
            return kind
    raise ConfigError(f"{source}: unknown artifact kind {name!r}.")


def register(kind: ExportKind) -> None:
    """Add ``kind`` ahead of the others (replacing one of the same name)."""
    unregister(kind.name)
    _KINDS.insert(0, kind)


def unregister(name: str) -> None:
    _KINDS[:] = [k for k in _KINDS if k.name != name]


def model_files() -> tuple[str, ...]:
    """Every model file name a kind may write: what a new export replaces in its directory."""
    return tuple(dict.fromkeys(f for kind in _KINDS for f in kind.files))
