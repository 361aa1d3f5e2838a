"""What every child process of the tuner shares: the trial worker's pool process and the re-measure's fresh
interpreters end with their parent, ignore the terminal's Ctrl-C, and a death is told in one line; and a
spawned child never runs the caller's main script again."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any


def init_child(status: Any = None) -> None:
    """Ctrl-C is the parent's (it finishes the trial first); a parent killed with -9 takes the child along;
    progress lines go to ``status``, a pipe the parent drains, where one is given (a trial's child: its other
    lines to its stderr, as its parent's go)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    if status is not None:
        from tuner import logs, progress

        progress.send_to(status)
        logs.install()


def die_with_parent() -> None:
    """If the parent is killed (kill -9), end too: an orphan would keep building a trial nobody records,
    burn the cores other workers measure on, and hold the parent's stdout open."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def describe_death(code: int | None, who: str = "the trial's process") -> str:
    """One line for a child's exit code: a signal (SIGKILL is most likely the out-of-memory killer), a crash."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{who} was killed by {name}" + (" (likely out of memory)" if name == "SIGKILL" else "")
    if code is None or code == 0:
        return f"{who} died unexpectedly (a crash such as a segfault, or out of memory)"
    return f"{who} died (exit code {code})"


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """While a "spawn" child starts: hide the caller's main script from multiprocessing, which would otherwise
    run it again in the child (a script or notebook-style file calling ``tuner.tune`` at top level, with no
    ``if __name__ == "__main__":`` guard, would start a second study there). A trial's child needs nothing of
    it: everything it runs is the tuner's, and a model or data given in memory reaches it as files."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        if "__file__" in saved:
            del main.__file__  # type: ignore[union-attr]
        if "__spec__" in saved:
            main.__spec__ = None  # type: ignore[union-attr]  # multiprocessing reads it: None, not absent
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)
