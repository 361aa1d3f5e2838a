"""The Python API: ``tune`` (``tuning.py``: the one way a study runs, from Python and ``tuner run`` alike) and
``load`` (a stored study's result), ``inputs`` (a model and data given in memory, saved once by content),
``TuneResult`` (``tune_result.py``);
``measure_config`` (``measuring.py``: one configuration built and measured, what ``tuner measure`` runs)."""

from tuner.api.measuring import Measured, measure_config
from tuner.api.tuning import load, tune

__all__ = ["Measured", "load", "measure_config", "tune"]
