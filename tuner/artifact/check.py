"""One line of ``tuner verify``'s answer (``Check``) and how runtime settings read in it: shared by verify and the
export kinds' verify hooks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    recorded: str
    now: str
    ok: bool | None  # None: informational, not compared
    note: str = ""


_SHORT = {
    "INFERENCE_PRECISION_HINT": "precision",
    "PERFORMANCE_HINT": "mode",
    "INFERENCE_NUM_THREADS": "threads",
    "ENABLE_CPU_PINNING": "pinning",
}


def settings_text(config: dict[str, Any]) -> str:
    return " ".join(f"{_SHORT.get(k, k)}={v}" for k, v in config.items())
