"""Model-zoo packages imported so that their model builders work on the CPU torch wheel too.

torchvision's wheels on PyPI are CUDA builds (``0.28.0+cu130`` for torch 2.13): beside the CPU torch wheel that
README installs, their C++ ops (``torchvision._C``: nms, roi_align, ...) cannot load, since they link against
torch's CUDA libraries. torchvision means to carry on without them (``extension._has_ops()`` is then False), but
its ``_meta_registrations`` registers a fake kernel for ``torchvision::nms`` and ``torchvision::qnms``
unconditionally, which fails when the op was never defined, and so ``import torchvision`` fails as a whole
(``RuntimeError: operator torchvision::nms does not exist``). ``torchvision_models`` then defines the schemas of
those ops (no kernel: calling ``torchvision.ops.nms`` still says torchvision's ops are missing) and imports again.
Classification models are plain torch modules and need none of these ops. Where the ops load (a matching CUDA
torch, or a CPU torchvision build) the first import succeeds and nothing is defined.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

# Ops that torchvision registers fake kernels for whether or not its C++ extension loaded (torchvision 0.28).
_UNGUARDED_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_fragment: Any = None  # the torch.library fragment holding those schemas; kept alive with the process


def torchvision_models() -> ModuleType:
    """``torchvision.models``; ImportError when torchvision is not installed or cannot be imported here."""
    try:
        import torchvision.models as models

        return models
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise ImportError(f"torchvision cannot be imported: {err}") from None
        first = err
    _define_unguarded_ops()
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import's half-initialized modules
    try:
        import torchvision.models as models
    except RuntimeError as err:
        raise ImportError(f"torchvision cannot be imported: {first}; then {err}") from None
    return models


def _define_unguarded_ops() -> None:
    global _fragment
    import torch

    if _fragment is None:
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _UNGUARDED_OPS:
        name = schema.split("(", 1)[0]
        try:
            getattr(torch.ops.torchvision, name)
        except (AttributeError, RuntimeError):
            _fragment.define(schema)
