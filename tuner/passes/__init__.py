"""Build one candidate: compress (drop blocks, prune, sparsify) -> recover -> fold -> the artifact its placement
runs, each step cached by content; one step per module.

``chain.py`` runs the steps (``build``, ``Built``, ``ARTIFACT_STEPS``, ``rebuild_module``); ``step.py`` is a step's
contract; compress, student, prune, sparsify, recover, fuse, onnx_export, quantize (qdq, sensitivity) are the steps.
"""

from tuner.passes.chain import ARTIFACT_STEPS, Built, build, rebuild_module

__all__ = ["ARTIFACT_STEPS", "Built", "build", "rebuild_module"]
