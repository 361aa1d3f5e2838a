"""Error taxonomy.

Everything a user can cause is a ``TunerError`` and reaches the screen as one line
(the CLI prints ``str(err)`` and exits 2).  Bugs (TypeError, KeyError, ...) are not
caught anywhere on purpose: they should show a traceback.
"""

from __future__ import annotations


class TunerError(Exception):
    """A problem the user can fix; the message names it and says what to do."""


class ConfigError(TunerError):
    """A configuration, search-space or objectives file, or a CLI value, is invalid."""


class UnsupportedCombination(ConfigError):
    """A valid configuration that this machine or placement cannot run (refused before work)."""


class ModelError(TunerError):
    """The model cannot be constructed, or its weights cannot be loaded."""


class DataError(TunerError):
    """The data set is missing, empty or unusable."""


class CandidateBuildError(TunerError):
    """Building one candidate failed; the trial fails, the study goes on."""


class MeasurementError(TunerError):
    """Measuring one candidate failed; the trial fails, the study goes on."""


class HopelessCandidate(TunerError):
    """The accuracy pass showed the candidate cannot meet the accuracy constraint: stopped early."""
