"""One module per runtime (``torch_runtime``, ``ort``, ``openvino``: a ``Placement`` and its ``Session``, contract in
``base``); ``registry`` lists the placements and refuses what cannot run here."""

from tuner.runtimes.base import Placement, Session
from tuner.runtimes.registry import PLACEMENTS, available, check_supported

__all__ = ["PLACEMENTS", "Placement", "Session", "available", "check_supported"]
