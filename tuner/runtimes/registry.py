"""The placement registry: a new runtime is one module plus one line in ``PLACEMENTS`` (and its row in
``tuner.names``); ``check_supported`` refuses what cannot run here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuner.errors import UnsupportedCombination
from tuner.runtimes.base import Placement
from tuner.runtimes.openvino import OpenVinoPlacement
from tuner.runtimes.ort import OrtPlacement
from tuner.runtimes.torch_runtime import TorchPlacement

if TYPE_CHECKING:
    from tuner.candidate import Candidate

PLACEMENTS: dict[str, Placement] = {
    p.name: p
    for p in (
        TorchPlacement("cpu"),
        OrtPlacement("cpu"),
        TorchPlacement("cuda"),
        OrtPlacement("cuda"),
        OrtPlacement("tensorrt"),
        OpenVinoPlacement(),
    )
}


def check_supported(candidate: Candidate) -> Placement:
    """The candidate's placement, or UnsupportedCombination saying why it cannot run here."""
    placement = PLACEMENTS[candidate.placement]
    reason = placement.unavailable() or placement.refuse(candidate.precision)
    if reason:
        raise UnsupportedCombination(f"{candidate.precision} on {candidate.placement} is refused: {reason}.")
    reason = placement.refuse_serving(candidate.streams, candidate.in_flight)
    if reason:
        raise UnsupportedCombination(
            f"streams {candidate.streams} with {candidate.in_flight} requests on "
            f"{candidate.placement} is refused: {reason}."
        )
    return placement


def available() -> dict[str, str | None]:
    """Every placement with the reason it is unavailable here (None when it runs)."""
    return {name: p.unavailable() for name, p in PLACEMENTS.items()}
