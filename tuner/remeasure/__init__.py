"""Trustworthy latency: a finished study's Pareto set and baseline re-timed in fresh processes, interleaved.

``orchestrate`` chooses, interleaves, compares and keeps the record on the study; ``runner`` is one measurement in a
fresh interpreter (``python -m tuner.remeasure.runner``); ``outcome`` the typed result; ``text`` its table.
"""

from tuner.remeasure.orchestrate import remeasure_pareto
from tuner.remeasure.outcome import RemeasureEntry, RemeasureSummary
from tuner.remeasure.text import format_remeasure

__all__ = ["RemeasureEntry", "RemeasureSummary", "format_remeasure", "remeasure_pareto"]
