"""Why a build is fast or slow: a per-layer profile of a built candidate from its runtime's own profiler
(``profile``), matched to the model's module names (``match``), and two of them compared in words (``compare``);
``trials`` explains a study's trials (what ``tuner explain`` runs).

The functions named as their modules (``profile``, ``compare``) are not re-exported: ``tuner.explain.profile`` is
always the module.
"""

from tuner.explain.compare import Comparison, render
from tuner.explain.layers import LayerProfile, LayerTime, NodeTime
from tuner.explain.trials import cached_profile, costliest, explain_study, read_trials, write_profile

__all__ = [
    "Comparison",
    "LayerProfile",
    "LayerTime",
    "NodeTime",
    "cached_profile",
    "costliest",
    "explain_study",
    "read_trials",
    "render",
    "write_profile",
]
