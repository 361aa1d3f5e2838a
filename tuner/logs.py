"""The tuner's lines to the user, through ``logging``: library modules log to ``logging.getLogger(__name__)`` (all
under ``tuner``), and whoever shows them (the command line, ``tune()``, each child process) installs ``to(sink)``,
which hands each message to ``sink`` as it is, one call per line: the same lines print gave, on the same stream.

Without a handler (the library used on its own) the info lines stay silent and warnings reach Python's last
resort on stderr, as ``logging`` does for any library; ``caplog`` in tests reads them all.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator

ROOT = "tuner"


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Lines(logging.Handler):
    """Each record's message to ``sink``, unformatted; what the sink raises (a closed pipe, a full disk:
    ``tuner.streams``) reaches the caller, as it did from print."""

    def __init__(self, sink: Callable[[str], None]):
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink(record.getMessage())


def install(sink: Callable[[str], None] = stderr, level: int = logging.INFO) -> None:
    """From now on, in this process, the tuner's lines go to ``sink`` (and only there: not to the root logger)."""
    log = logging.getLogger(ROOT)
    log.handlers = [_Lines(sink)]
    log.setLevel(level)
    log.propagate = False


@contextlib.contextmanager
def to(sink: Callable[[str], None] = stderr, level: int = logging.INFO) -> Iterator[None]:
    """Within: the tuner's lines go to ``sink``; after it, to wherever they went before."""
    log = logging.getLogger(ROOT)
    saved = log.handlers[:], log.level, log.propagate
    install(sink, level)
    try:
        yield
    finally:
        log.handlers, log.propagate = saved[0], saved[2]
        log.setLevel(saved[1])
