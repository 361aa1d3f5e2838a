"""The command line's standard streams, guarded: a reader that left the pipe (``| head``) ends the command quietly
(exit 141, as a shell reports SIGPIPE); an output that cannot be written (``> /dev/full``) is one line on stderr
(exit 74); neither leaves Python a write error to complain about at exit."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_RESOURCE = 74  # sysexits' EX_IOERR: a disk, the study's database or the output could not be written
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process that SIGPIPE ended: the reader left (`| head`)


class OutputLost(BaseException):
    """stdout or stderr could not be written (the pipe's reader left, the disk is full). A BaseException, as
    KeyboardInterrupt is: no ``except Exception`` on the way turns it into a failed trial."""

    def __init__(self, err: OSError, stream: str) -> None:
        super().__init__(err)
        self.err, self.stream = err, stream


class _Guarded:
    """A standard stream whose write errors become ``OutputLost``, told apart from the work's own OSErrors."""

    def __init__(self, stream: Any, name: str) -> None:
        self._stream, self._name = stream, name

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            raise OutputLost(err, self._name) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            raise OutputLost(err, self._name) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def output_guarded(command_line: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """The command line with its output guarded: a closed pipe (``| head``) ends it quietly with 141; an output
    that cannot be written (``> /dev/full``) with one line on stderr and 74; nothing is left for Python to complain
    about when it flushes the streams at exit."""

    @functools.wraps(command_line)
    def main(argv: Sequence[str] | None = None) -> int:
        stdout, stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Guarded(stdout, "stdout"), _Guarded(stderr, "stderr")  # type: ignore[assignment]
        try:
            try:
                return command_line(argv)  # or SystemExit: argparse's --help and usage errors print, then exit
            finally:
                sys.stdout.flush()  # a write error shows here, while it can still be reported, not at exit
        except OutputLost as lost:
            sys.stdout, sys.stderr = stdout, stderr
            _silence(stdout, lost.stream == "stdout")
            if isinstance(lost.err, BrokenPipeError):
                _silence(stderr, lost.stream == "stderr")
                return EXIT_BROKEN_PIPE
            try:
                print(
                    f"tuner: error: cannot write to {lost.stream} ({lost.err.strerror or lost.err}); free space on "
                    "its device or send the output elsewhere.",
                    file=stderr,
                    flush=True,
                )
            except OSError:
                _silence(stderr, True)
            return EXIT_RESOURCE
        finally:
            if isinstance(sys.stdout, _Guarded):
                sys.stdout, sys.stderr = stdout, stderr

    return main


def _silence(stream: Any, lost: bool) -> None:
    """Point a stream that can no longer be written at /dev/null, so that Python's flush at exit (of what is still
    buffered) neither fails nor prints 'Exception ignored'."""
    if not lost:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's captured stream): nothing to flush
        pass
