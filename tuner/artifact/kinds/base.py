"""What an export kind is: which candidates it serves, how it saves one into an export directory, how verify loads
it back, its README lines, and its own checks in verify. One subclass per kind, listed in
``tuner.artifact.kinds.registry``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.artifact.check import Check
    from tuner.candidate import Candidate
    from tuner.dataset import Dataset
    from tuner.passes.chain import Built
    from tuner.workload_spec import WorkloadSpec


@dataclass(frozen=True)
class SaveJob:
    """What a kind may save from: the rebuilt candidate, the data it was measured on, the export's measured
    figures, and the user's choice of torch form (``--torch-format``)."""

    candidate: Candidate
    built: Built
    data: Dataset
    spec: WorkloadSpec
    metrics: dict[str, Any]  # the export's own measurement (threads as resolved)
    torch_format: str  # export | state_dict


@dataclass(frozen=True)
class Saved:
    """What a kind saved: its model file (config.yaml's ``artifact.file``; every file in the directory is hashed),
    the dtype its input takes, and the kind's own entries in config.yaml's ``artifact`` section."""

    file: str
    input_dtype: str = "float32"
    details: dict[str, Any] = field(default_factory=dict)


class ExportKind:
    """One export kind. ``name`` is recorded as ``artifact.kind`` and looked up by verify; ``files`` are all the
    names it may write (a new export replaces them); ``runtime`` names what runs it in the README."""

    name: str = ""
    runtime: str = ""
    files: tuple[str, ...] = ()

    def serves(self, job: SaveJob) -> bool:
        """Whether this kind can hold ``job``'s candidate (the first kind in the registry that serves and saves
        it is the export's)."""
        raise NotImplementedError

    def save(self, job: SaveJob, directory: Path) -> Saved | None:
        """Write the model into ``directory``; None when it cannot after all (the next kind that serves is tried)."""
        raise NotImplementedError

    def load(self, directory: Path, config: dict[str, Any], candidate: Candidate, data: Dataset) -> Built:
        """The saved model as a ``Built`` that ``tuner.measure.open_session`` opens."""
        raise NotImplementedError

    def code(self, config: dict[str, Any]) -> list[str]:
        """The README's Python lines that load the model in its runtime and print a prediction."""
        raise NotImplementedError

    def serve_code(self, config: dict[str, Any]) -> list[str]:
        """README lines (after ``code``) serving ``batches`` with the recorded streams and requests in flight."""
        raise NotImplementedError

    def readme_files(self, config: dict[str, Any]) -> list[str]:
        """README lines for its files besides the model file."""
        return []

    def verify(self, session: Any, config: dict[str, Any], same_machine: bool) -> list[Check]:
        """Checks of its own on the opened session, before verify measures it (it may set the session up as the
        export recorded)."""
        return []
