"""Export a study's chosen point: rebuild it exactly as the study did and re-measure it (``tuner.artifact.rebuild``),
save the model in its runtime's native form through the first export kind that serves it (``save_model``; the kinds
are ``tuner.artifact.kinds``: ``model.onnx`` for ONNX Runtime placements, the OpenVINO IR beside its ONNX file for
OpenVINO, a ``torch.export`` program or a ``state_dict.pt`` for torch ones), and write ``config.yaml``
(``ExportConfig``, filled by ``tuner.artifact.config_sections``) and a ``README.md`` with the lines that load and
run it. Everything is written to a temporary sibling (``.OUT.partial-<host>-<pid>-xxxx``) first and moved into place
only when complete; a previous export is replaced, nothing else, and the partial siblings that killed exports left
are removed by the next one."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from tuner.artifact.config_sections import export_config
from tuner.artifact.kinds import registry
from tuner.artifact.kinds.base import ExportKind, Saved, SaveJob
from tuner.artifact.readme import readme_text
from tuner.artifact.rebuild import Remeasured, rebuild_and_measure
from tuner.cache import owned_temp_dir, remove_leftovers
from tuner.defaults import DEFAULTS
from tuner.errors import ConfigError, TunerError
from tuner.metric import Metric
from tuner.names import CONFIG_FILE, EXPORT_FORMAT, README_FILE
from tuner.record import TrialRecord

_log = logging.getLogger(__name__)


# all an export writes beside its kinds' model files, and may replace
EXPORT_FILES = (
    README_FILE,
    CONFIG_FILE,
    "profile.json",
)  # tuner.explain.trials.PROFILE_FILE: where the time goes, per layer
PARTIAL_STALE_SECONDS = 3600  # a partial export is written in seconds (after the rebuild): this old, it is a leftover


def read_config_file(path: Path) -> dict[str, Any]:
    import yaml

    value = yaml.safe_load(path.read_text(encoding="utf-8"))
    return value if isinstance(value, dict) else {}


def is_export(path: Path) -> bool:
    """A directory a previous ``tuner export`` wrote (and so one that export may replace)."""
    try:
        return (path / CONFIG_FILE).is_file() and read_config_file(path / CONFIG_FILE).get("format") == EXPORT_FORMAT
    except Exception:  # noqa: BLE001 - unreadable: not an export
        return False


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory to create.")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ConfigError(f"--out {out} is not empty and not a previous export; pass a new or empty directory.")


@dataclass(frozen=True)
class Exported:
    out: Path
    trial: int
    artifact: str  # file name inside out
    kind: str  # its export kind's name (tuner.artifact.kinds)
    config: dict[str, Any]


def export(
    study: optuna.Study,
    trial: TrialRecord,
    why: str,
    out: str | Path,
    studies_dir: str | Path = DEFAULTS.studies_dir,
    storage: str | None = None,
    torch_format: str = DEFAULTS.torch_format,
    metric: Metric | None = None,
) -> Exported:
    """Rebuild ``trial``, re-measure it, and write ``out/config.yaml`` plus its artifact. ``metric``: the study's
    own function (``TuneResult.export`` passes it), scored again on the rebuilt model's logits."""
    from tuner.explain.profile import refuse
    from tuner.explain.trials import cached_profile, write_profile

    if torch_format not in ("export", "state_dict"):
        raise ConfigError(f"--torch-format must be export or state_dict, got {torch_format!r}.")
    out = Path(out)
    check_out(out)
    _remove_partials(out)
    again = rebuild_and_measure(study, trial, why, studies_dir, metric)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        with _signals_held():  # a SIGTERM right after the directory appears must find its name kept for removal
            tmp = owned_temp_dir(out.parent, _partial_prefix(out))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary directory
        kind, saved = save_model(again, tmp, torch_format)
        config = export_config(study, trial, why, storage, metric, again, kind, saved, tmp)
        readme = readme_text(config.to_dict())
        candidate = again.candidate
        if refuse(candidate.placement) is None:  # where its time goes: profile.json, the costliest layers
            readme += "\n" + "\n".join(write_profile(tmp, cached_profile(again.workload, again.built))) + "\n"
        (tmp / README_FILE).write_text(readme, encoding="utf-8")
        config.write(tmp / CONFIG_FILE)
        _move_into_place(tmp, out)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, trial.number, saved.file, kind.name, config.to_dict())


def save_model(again: Remeasured, directory: Path, torch_format: str) -> tuple[ExportKind, Saved]:
    """The model saved into ``directory`` by the first kind that serves it and saves it
    (``tuner.artifact.kinds.registry``)."""
    job = SaveJob(again.candidate, again.built, again.workload.data, again.spec, again.metrics, torch_format)
    for kind in registry.kinds():
        if kind.serves(job):
            saved = kind.save(job, directory)
            if saved is not None:
                return kind, saved
    raise TunerError(
        f"no export kind saves {again.candidate} (kinds: " + ", ".join(k.name for k in registry.kinds()) + ")."
    )


def _partial_prefix(out: Path) -> str:
    return f".{out.name}.partial-"


def _remove_partials(out: Path) -> None:
    """The partial exports to ``out`` that killed exports (kill -9, a power cut) left beside it; a running export's
    is kept (``tuner.cache.remove_leftovers``)."""
    if out.parent.is_dir() and remove_leftovers(out.parent, re.escape(_partial_prefix(out)), PARTIAL_STALE_SECONDS):
        _log.info(f"removed the unfinished exports to {out} that interrupted runs left in {out.parent}")


def _move_into_place(tmp: Path, out: Path) -> None:
    """The new export's files into ``out``. A previous export alone there is swapped for the new one by two
    renames; one beside other files of the user's loses only the files an export writes (the artifact kinds and
    config.yaml, written last), and the rest stays."""
    if not out.is_dir() or not any(out.iterdir()):
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
        return
    if not is_export(out):  # checked again: something may have appeared while we built
        raise ConfigError(f"--out {out} is not empty and not a previous export; pass a new directory.")
    replaced = (*registry.model_files(), *EXPORT_FILES)
    if {p.name for p in out.iterdir()} <= set(replaced):
        with _signals_held():  # a SIGTERM between the renames would leave no export at out
            aside = owned_temp_dir(out.parent, _partial_prefix(out))  # a kill -9 here leaves a partial: removed later
            os.replace(out, aside)
            os.replace(tmp, out)
        shutil.rmtree(aside, ignore_errors=True)
        return
    new = {p.name for p in tmp.iterdir()}
    for name in replaced:
        if name not in new:
            (out / name).unlink(missing_ok=True)
    for name in sorted(new, key=lambda n: n == CONFIG_FILE):  # config.yaml last: it marks the export complete
        os.replace(tmp / name, out / name)
    tmp.rmdir()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT that arrive inside are acted on as it ends, for a few file operations that must happen
    together (a directory made and its name kept; two renames). Python runs a handler in the main thread between
    bytecodes whichever thread the kernel chose (a runtime's pool, say), so masking the signal in this thread would
    not hold it: the handlers are swapped instead, which only the main thread may do."""
    held = (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, held):
        yield  # elsewhere, or a handler Python did not install (it could not be put back)
        return
    caught: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for signum in caught:
            signal.raise_signal(signum)  # now handled as it would have been
