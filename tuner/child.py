"""What every child process of the tuner shares: the trial worker's pool process and the re-measure's fresh
interpreters end with their parent, ignore the terminal's Ctrl-C, and a death is told in one line."""

from __future__ import annotations

import os
import signal
import sys


def init_child() -> None:
    """Ctrl-C is the parent's (it finishes the trial first); a parent killed with -9 takes the child along."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


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
