"""Where the user's files are: --studies-dir checked before any work, the paths a study records made absolute (so
that export and verify read the same workload from any folder), and a model file named in cache keys by its name,
not by the folder it lies in."""

from __future__ import annotations

from pathlib import Path

from tuner.errors import ConfigError


def check_studies_dir(studies_dir: str) -> None:
    """--studies-dir must be a directory this process can write, or one it can create: refused in one line before
    any work, not an OSError traceback when the first study or cache file is written. A missing one is made and
    removed again to find out (a pseudo file system such as /proc lets no one create, whatever it says)."""
    import os
    import tempfile

    path = Path(studies_dir)
    fix = "pass a directory you can write (it is created if missing)"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--studies-dir {studies_dir} is a file; {fix}.")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK) or os.statvfs(path).f_flag & os.ST_RDONLY:
            raise ConfigError(f"--studies-dir {studies_dir} is not writable (read-only or no permission); {fix}.")
        return
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        raise ConfigError(f"--studies-dir {studies_dir}: {parent} is a file, not a directory; {fix}.")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".tuner-probe-", dir=parent))
        probe.rmdir()
    except OSError as err:
        raise ConfigError(
            f"--studies-dir {studies_dir} cannot be created in {parent} ({err.strerror or type(err).__name__}); {fix}."
        ) from None


def absolute(value: str | None) -> str | None:
    """A --model / --data / --weights value with its file made absolute: ``file.py:callable``'s file, or a path that
    exists; a name (``resnet18``, ``module:callable``) as it is."""
    if not value:
        return value
    target, sep, attr = value.rpartition(":")
    if sep and target.endswith(".py") and Path(target).is_file():
        return f"{Path(target).resolve()}:{attr}"
    return str(Path(value).resolve()) if Path(value).exists() else value


def model_id(name: str) -> str:
    """A --model value as cache keys see it: a file by its name, not by where it lies (its content is in the keys
    through ``models.source_id``), so that the absolute path a study records keys as the relative one it was
    given, and a study's cache serves its export run from another folder."""
    target, sep, attr = name.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).name}:{attr}"
    return Path(name).name if Path(name).name == "module.pt" else name
