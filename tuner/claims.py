"""Claims on cache entries: an expensive entry (a recovery, an int8 calibration, a sensitivity ranking, the
baseline: whatever goes through ``Cache.entry``) is built by one worker of a study while the others wait for it
and then reuse it from the shared cache directory.

A claim is a lock that dies with its holder, so a killed worker never leaves a key blocked:

- On PostgreSQL (the study's ``--storage``, passed down as ``WorkloadSpec.claims``) it is a session-level
  advisory lock held on a connection of its own: the server releases it when that connection ends, whether the
  holder finished, raised or was killed; a host that vanishes is found by the server's TCP keepalives, set short
  on that connection. This is the study's own storage, reachable by every worker whatever file system they share.
- Otherwise (SQLite, MySQL, or no storage at all: export, verify, the re-measure) it is an exclusive ``flock`` on a file
  in the cache directory's ``.claims/``: the kernel releases it when the holder's process dies (NFSv4 holds it as
  a lease that expires with a dead client). SQLite has no lock that outlives a transaction and follows a
  connection, and the workers of a SQLite study share its file system, hence the cache directory, anyway.

A claim only saves duplicate work: whoever gets it re-checks the entry (another worker may have finished it
meanwhile), and a claim that cannot be taken (the server unreachable) is reported and the entry built unclaimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

_log = logging.getLogger(__name__)

CLAIMS_DIR = ".claims"  # under the cache root: the lock files of FileClaims
POLL = 0.5  # seconds between two tries of a claim another worker holds
TELL_EVERY = 30.0  # seconds between two "still waiting" lines


def holder_name() -> str:
    """How a claim's holder is named to those waiting for it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Claims(Protocol):
    def hold(self, key: str) -> contextlib.AbstractContextManager[float]:
        """Held while the caller checks and builds ``key``; yields the seconds it waited for another holder."""
        ...


def make_claims(url: str | None, root: Path) -> Claims:
    """On a PostgreSQL ``url``, advisory locks of that server; else lock files under the cache ``root``."""
    if url and url.startswith("postgresql"):
        return AdvisoryClaims(url)
    return FileClaims(root)


def _wait(key: str, holder: Callable[[], str | None], try_once: Callable[[], bool]) -> float:
    """Try ``try_once`` until it takes the claim, saying who holds it meanwhile; returns the seconds waited."""
    start = told = time.monotonic()
    if try_once():
        return 0.0
    _log.info(f"cache entry {key}: another worker ({holder() or 'unknown'}) is building it; waiting to reuse it")
    while not try_once():
        time.sleep(POLL)
        if time.monotonic() - told >= TELL_EVERY:
            told = time.monotonic()
            _log.info(f"cache entry {key}: still waiting for {holder() or 'another worker'} ({told - start:.0f} s)")
    return time.monotonic() - start


class FileClaims:
    """``<root>/.claims/<key>``, held by ``flock``; the holder writes its name in it and removes it when done."""

    def __init__(self, root: Path):
        self.dir = root / CLAIMS_DIR

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[float]:
        path = self.dir / key
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        except OSError as err:  # a read-only cache: whatever fails next says so; the claim only saves work
            _log.warning(
                f"warning: cannot claim cache entry {key} under {self.dir} ({err.strerror or err}); building it "
                "unclaimed"
            )
            yield 0.0
            return
        fd: list[int] = []

        def try_once() -> bool:
            f = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(f)
                return False
            try:  # the holder before us removed the file after we opened it: ours is locked but orphaned
                same = os.fstat(f).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(f)
                return False
            os.ftruncate(f, 0)
            os.write(f, holder_name().encode())
            fd.append(f)
            return True

        def holder() -> str | None:
            with contextlib.suppress(OSError):
                return path.read_text()[:100] or None
            return None

        waited = _wait(key, holder, try_once)
        try:
            yield waited
        finally:  # removed while still locked, so that no one locks a file on its way out
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd[0])


def remove_stale(root: Path) -> None:
    """The claim files under the cache ``root`` that no one holds (left by killed holders), removed: each is locked
    first, as a holder removes its own, so that no live claim's file goes."""
    try:
        found = list((root / CLAIMS_DIR).iterdir())
    except OSError:
        return
    for path in found:
        with contextlib.suppress(OSError):
            f = os.open(path, os.O_RDWR)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(f).st_ino == os.stat(path).st_ino:
                    path.unlink()
            finally:
                os.close(f)


def advisory_id(key: str) -> int:
    """The 64-bit advisory lock id of a cache key (salted: other applications' ids on the server stay apart)."""
    return int.from_bytes(hashlib.sha256(f"tuner cache claim {key}".encode()).digest()[:8], "big", signed=True)


class AdvisoryClaims:
    """PostgreSQL advisory locks, each on a connection of its own, opened only when an entry is missing."""

    def __init__(self, url: str):
        self.url = url
        self._engine: Any = None
        self._warned = False

    def _connect(self) -> Any:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        # Named for those waiting; a holder whose host vanishes is dropped after about 25 s of silence.
        conn.execute(
            sqlalchemy.text("SELECT set_config('application_name', :name, false)"),
            {"name": f"tuner {holder_name()}"[:63]},
        )
        for setting, value in (
            ("tcp_keepalives_idle", 10),
            ("tcp_keepalives_interval", 5),
            ("tcp_keepalives_count", 3),
        ):
            conn.execute(sqlalchemy.text(f"SET {setting} = {value}"))
        return conn

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[float]:
        import sqlalchemy

        lock_id = advisory_id(key)
        try:
            conn = self._connect()
        except Exception as err:  # noqa: BLE001 - the claim saves work; the build goes on without it
            if not self._warned:
                _log.warning(
                    f"warning: cannot claim cache entries on the study's storage ({type(err).__name__}); "
                    "building without claims, so another worker may build the same entry"
                )
                self._warned = True
            yield 0.0
            return

        def try_once() -> bool:
            return bool(conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}).scalar())

        def holder() -> str | None:
            # A bigint advisory lock shows in pg_locks as classid (high 32 bits) and objid (low 32), objsubid 1.
            high, low = (lock_id >> 32) & 0xFFFFFFFF, lock_id & 0xFFFFFFFF
            with contextlib.suppress(Exception):
                row = conn.execute(
                    sqlalchemy.text(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                        "AND l.classid::text::bigint = :high AND l.objid::text::bigint = :low"
                    ),
                    {"high": high, "low": low},
                ).first()
                return str(row[0]).removeprefix("tuner ") if row and row[0] else None
            return None

        try:
            yield _wait(key, holder, try_once)
        finally:  # closing the session releases the lock, whatever state it is in
            with contextlib.suppress(Exception):
                conn.close()
