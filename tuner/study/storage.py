"""Where studies live: names, storage URLs, creating or opening a study, and the annotations the tuner adds
to a finished study, all through Optuna's public API."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from tuner import hardware
from tuner.errors import ConfigError, ResourceExhausted, first_line
from tuner.names import DROP_UNIT
from tuner.record import DROP_UNIT_ATTR, EXPLAIN_ATTR, REMEASURE_ATTR

if TYPE_CHECKING:
    from tuner.objectives import Constraint
    from tuner.workload_spec import WorkloadSpec

# The figures a user sorts trials by, each also kept as a plain trial user attr (beside the "metrics" dict), so that
# optuna-dashboard and trials_dataframe() show them as numbers.
FLAT_METRICS = (
    "accuracy",
    "accuracy_drop",
    "per_sample_ms",
    "latency_ms",
    "latency_p95_ms",
    "throughput",
    "size_mb",
    "compressed_mb",
    "macs",
    "params",
    "worst_class_drop",
    "flip_rate",
    "ece",
    "corruption_drop",
)
FLAT_LOAD_METRICS = ("load_throughput", "load_p95_ms", "open_throughput", "open_p95_ms")  # where measured under load
REMEASURED_PREFIX = "remeasured_per_sample_ms #"  # study user attr per re-timed trial: its re-measured figure
CONSTRAINT_PREFIX = "constraint: "  # trial user attr per constraint: its violation, for optuna-dashboard's table
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Our own lines say what happens; Optuna's per-trial INFO logs and experimental warnings repeat it (and a failed
    trial, one line of ours with its reason, would get its traceback as a warning). Restored afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def check_study_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ConfigError(
            f"study name {name!r} is not allowed; use letters, digits, '.', '_' and '-' only "
            "(no path separators), at most 128 characters."
        )
    return name


def default_study_name(
    spec: WorkloadSpec, resolution: int, model_name: str | None = None, studies_dir: str | None = None
) -> str:
    """model-data-resolution-hardware; ``model_name`` names a model the spec holds as a saved file (tune()). Where a
    model or data set is given by path, a short hash of the full resolved paths follows, so that distinct folders
    never share a study (``фото`` and ``猫猫``: both "_" in ASCII; ``a/cats`` and ``b/cats``) and the same one always
    finds its own. A study made before that hash was added keeps its name: with ``studies_dir`` (the default
    storage), its SQLite file there is looked for."""
    model, model_path, data, data_path = _name_parts(spec, model_name)
    readable = f"{_readable(model, 'model')}-{_readable(data, 'data')}-{resolution}px-{hardware.fingerprint_id()}"
    paths = [p for p in (model_path, data_path) if p is not None]
    if not paths:
        return readable
    name = f"{readable}-{hashlib.sha256('|'.join(paths).encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    legacy = f"{model}-{data}-{resolution}px-{hardware.fingerprint_id()}"  # lossless only where nothing was replaced
    lossless = all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in (model, data)) and _NAME.match(legacy)
    if (
        studies_dir is not None
        and lossless
        and (Path(studies_dir) / f"{legacy}.db").is_file()
        and not (Path(studies_dir) / f"{name}.db").exists()
    ):
        return legacy
    return name


def _name_parts(spec: WorkloadSpec, model_name: str | None) -> tuple[str, str | None, str, str | None]:
    """(the model's name, the full path it was given by or None, the data's name, its full path or None)."""
    if model_name is None:
        model_name = Path(spec.model.split(":")[-1]).stem if ":" in spec.model or spec.onnx else spec.model
    model_path = _source_path(spec.model)
    if spec.student:  # another workload: a study of its own (its trials rebuild the student)
        model_name += "-student-" + Path(spec.student.split(":")[-1]).stem
        student_path = _source_path(spec.student)
        if student_path is not None:
            model_path = f"{model_path or spec.model}|{student_path}"
    data_path = None if spec.data == "digits" else str(Path(spec.data).resolve())
    return model_name, model_path, "digits" if data_path is None else Path(data_path).name, data_path


def _source_path(model: str) -> str | None:
    """A model given by a file (``file.py:callable``, an ONNX or saved file): that file's full path (with the
    callable); a built-in, zoo or ``module:callable`` model: None (its name says it all)."""
    target, _, call = model.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).resolve()}:{call}"
    return str(Path(model).resolve()) if ":" not in model and Path(model).is_file() else None


def _readable(text: str, empty: str) -> str:
    """``text`` in the characters a study name allows (each run of others one '_', no '..'), at most 40 of them,
    starting and ending with a letter or digit; ``empty`` where none is left."""
    kept = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "_", text)).strip("._-")
    return kept[:40].rstrip("._-") or empty


def default_storage(studies_dir: str, name: str) -> str:
    """SQLite under ``studies_dir`` (made when the study opens: bad input leaves no empty directory behind)."""
    return f"sqlite:///{Path(studies_dir) / name}.db"


def mask_url(url: str) -> str:
    """The storage URL with its password replaced, for anything printed or written."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def check_storage_url(url: str) -> None:
    """What can be told of a --storage URL without connecting: a database scheme, and for SQLite a file path
    whose directory exists (else the error would come only after the workload loaded)."""
    if not re.match(r"^(sqlite|postgresql|mysql)(\+\w+)?://", url):
        raise ConfigError(
            f"--storage {mask_url(url)} is not a database URL; use sqlite:///PATH.db or "
            "postgresql://USER:PASSWORD@HOST/DB."
        )
    if url.startswith("sqlite") and "://" in url:
        path = url.split("://", 1)[1].split("?", 1)[0]
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db, sqlite:////abs.db
        if not path or path == ":memory:":
            return
        file = Path(path)
        if file.is_dir():
            raise ConfigError(
                f"--storage {url}: {file} is a directory; name a database file such as {file / 'studies.db'}."
            )
        if not file.parent.is_dir():
            raise ConfigError(f"--storage {url}: the directory {file.parent} does not exist; create it first.")


def _sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite URL (None: another database, or SQLite in memory)."""
    if not (url.startswith("sqlite") and "://" in url):
        return None
    path = url.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # sqlite:///rel.db, sqlite:////abs.db
    return Path(path) if path and path != ":memory:" else None


SQLITE_LOCK_WAIT = 60.0  # seconds
SCHEMA_TRIES = 3  # opening a storage whose tables another worker is creating at that moment


def make_storage(url: str, heartbeat: float, max_retries: int) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats: a dead worker's RUNNING trial is failed and re-queued."""
    if not re.match(r"^(sqlite|postgresql|mysql)(\+\w+)?://", url):
        raise ConfigError(
            f"--storage {mask_url(url)} is not a database URL; use sqlite:///PATH.db or "
            "postgresql://USER:PASSWORD@HOST/DB."
        )
    # SQLite: a write waits up to 60 s for another process's lock (the URL's own ?timeout=SECONDS wins), then the
    # study stops in one line (``storage_failure``), resumable.
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine = {} if "timeout=" in url.partition("?")[2] else {"connect_args": {"timeout": SQLITE_LOCK_WAIT}}
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        for attempt in range(SCHEMA_TRIES):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=max(1, round(heartbeat)),
                    grace_period=max(3, round(3 * heartbeat)),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retries
                    ),
                )
            except Exception as err:
                # Workers started together on an empty database all create its tables; PostgreSQL refuses all but
                # one (a unique violation in its catalog): the others open it again, once the tables are there.
                if attempt + 1 < SCHEMA_TRIES and _schema_race(err):
                    time.sleep(0.5 + attempt)
                    continue
                raise
        raise AssertionError("unreachable")
    except ImportError:
        raise ConfigError(
            f"--storage {mask_url(url)} needs its database driver; for PostgreSQL: "
            "pip install 'psycopg[binary]' (or the tuner[postgres] extra)."
        ) from None
    except Exception as err:  # noqa: BLE001 - server down, bad credentials: one line
        failure = storage_failure(err, url)
        if failure is not None and ("full" in failure or "locked" in failure):
            raise ResourceExhausted(failure) from None
        first = first_line(err, 160) or type(err).__name__
        raise ConfigError(
            f"cannot open storage {mask_url(url)}: {mask_url(first)}; check the URL and that the "
            "database server is reachable."
        ) from None


def _schema_race(err: Exception) -> bool:
    """Whether opening a storage failed on tables another process was creating at that moment."""
    import sqlalchemy.exc

    return isinstance(err, sqlalchemy.exc.IntegrityError) or (
        isinstance(err, sqlalchemy.exc.ProgrammingError) and "already exists" in str(err)
    )


def existing_storage(name: str, storage: str | None, studies_dir: str) -> str:
    """The storage URL of an existing study (``run``'s default: SQLite under --studies-dir)."""
    check_study_name(name)
    if storage:
        check_storage_url(storage)
        path = _sqlite_file(storage)
        if path is not None and (not path.is_file() or not path.stat().st_size):  # opening it would write a database
            what = "an empty file" if path.is_file() else "which does not exist"
            raise ConfigError(
                f"no study {name!r}: --storage {mask_url(storage)} names {path}, {what}; pass the "
                "--storage URL that `tuner run` printed."
            )
        return storage
    path = Path(studies_dir) / f"{name}.db"
    if not path.is_file():  # optuna would silently create an empty database here
        raise ConfigError(
            f"no study {name!r}: {path} does not exist; pass the --study name that `tuner run` "
            "printed, and its --studies-dir or --storage."
        )
    return f"sqlite:///{path}"


def load_existing_study(name: str, storage: str | None, studies_dir: str) -> optuna.Study:
    url = existing_storage(name, storage, studies_dir)
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        try:
            known = [s.study_name for s in optuna.get_all_study_summaries(storage=url)]
        except Exception:  # noqa: BLE001 - only a hint for the message
            known = []
        raise ConfigError(
            f"no study {name!r} in {mask_url(url)}" + (f"; it holds {', '.join(known)}." if known else ".")
        ) from None
    except Exception as err:  # noqa: BLE001 - any storage failure is one line for the user
        raise ConfigError(
            f"cannot open storage {mask_url(url)} ({type(err).__name__}); check the --storage URL."
        ) from None


# ---------------------------------------------------------------- what a running trial records


def write_figures(trial: optuna.trial.BaseTrial, metrics: dict[str, Any]) -> None:
    """The whole ``metrics`` dict, and each figure of ``FLAT_METRICS`` (and of ``FLAT_LOAD_METRICS``, where measured)
    as a plain number of its own. ``trial``: a running ``optuna.Trial``, or a ``FrozenTrial`` made for
    ``study.add_trial`` (the tests record their studies through these writers too)."""
    trial.set_user_attr("metrics", metrics)
    trial.set_user_attr(DROP_UNIT_ATTR, DROP_UNIT)  # studies before it kept accuracy_drop as a fraction (tuner.record)
    for key in (*FLAT_METRICS, *FLAT_LOAD_METRICS):
        if isinstance(metrics.get(key), (int, float)):
            trial.set_user_attr(key, metrics[key])


def write_constraints(trial: optuna.trial.BaseTrial, violations: dict[str, float]) -> None:
    """Each constraint's violation (<= 0: met), named by the constraint in words (``accuracy_drop <= 0.2``), through
    ``Trial.set_constraint``: what Optuna's samplers, ``study.best_trials`` and ``FrozenTrial.constraints`` read.
    optuna-dashboard 0.21 shows only the older unnamed list in its constraints column, so each violation is a
    plain user attr too (``constraint: accuracy_drop <= 0.2``), which the dashboard lists and sorts."""
    for name, value in violations.items():
        trial.set_constraint(name, float(value))
        trial.set_user_attr(f"{CONSTRAINT_PREFIX}{name}", float(value))


def write_measured(trial: optuna.trial.BaseTrial, metrics: dict[str, Any], constraints: Sequence[Constraint]) -> None:
    """What a measured trial records beside its values: its figures and each constraint's violation, named by the
    constraint in words. The study loop writes every trial through this; tests make their studies with it too."""
    write_figures(trial, metrics)
    write_constraints(trial, {str(c): c.violation(metrics) for c in constraints})


# ---------------------------------------------------------------- annotations of a finished study
# Optuna keeps finished trials read-only, so what the tuner learns after a trial ended (the re-measure) is
# kept on the study, keyed by trial number: public API, on every storage.


def write_explain(study: optuna.Study, record: dict[str, Any]) -> None:
    """Keep the last layer-by-layer comparison (``tuner explain``), which the report draws as its layer view."""
    study.set_user_attr(EXPLAIN_ATTR, record)


def write_remeasure(study: optuna.Study, record: dict[str, Any]) -> None:
    """Keep the end-of-study re-measure (``RemeasureSummary.to_dict()``: per trial under ``trials``), and each
    re-timed trial's per-sample figure as a plain study user attr of its own (``remeasured_per_sample_ms #7``);
    one from an earlier re-measure that this one did not re-time is set to None."""
    study.set_user_attr(REMEASURE_ATTR, record)
    figures = {
        f"{REMEASURED_PREFIX}{int(n)}": float(e["per_sample_ms"])
        for n, e in (record.get("trials") or {}).items()
        if isinstance(e, dict) and isinstance(e.get("per_sample_ms"), (int, float))
    }
    for key in study.user_attrs:
        if key.startswith(REMEASURED_PREFIX) and key not in figures:
            study.set_user_attr(key, None)
    for key, value in figures.items():
        study.set_user_attr(key, value)


def storage_failure(err: BaseException, url: str | None = None) -> str | None:
    """One line for an error of the study's database itself (full, locked past its wait, gone), or None for any
    other error. Optuna wraps SQLAlchemy's errors in StorageInternalError; the driver's own first words (``database
    or disk is full``, ``database is locked``) say what happened."""
    if not isinstance(err, optuna.exceptions.StorageInternalError) and not type(err).__module__.startswith(
        ("sqlalchemy", "sqlite3", "psycopg")
    ):
        return None
    cause: BaseException | None = err
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(cause or err).split())
    text = text.split("[SQL:")[0].strip()[:200] or type(err).__name__
    what = f"the study's database {mask_url(url)}" if url else "the study's database"
    if "locked" in text:
        return (
            f"{what} stayed locked by another process past its wait ({text}); run the same command to resume "
            "once that process is done (a SQLite URL's ?timeout=SECONDS sets the wait, 60 s by default)."
        )
    return f"{what} failed: {text}; free disk space where it lives, then run the same command to resume."
