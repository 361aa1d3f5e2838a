"""Trustworthy latency: a finished study's Pareto set and baseline re-timed in fresh processes, interleaved.

``orchestrate`` chooses, interleaves, compares and keeps the record on the study; ``runner`` is one measurement in a
fresh interpreter (``python -m tuner.remeasure.runner``).
"""

from tuner.remeasure.orchestrate import RemeasureEntry, RemeasureSummary, format_remeasure, remeasure_pareto

__all__ = ["RemeasureEntry", "RemeasureSummary", "format_remeasure", "remeasure_pareto"]
