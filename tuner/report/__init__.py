"""The study report: one self-contained HTML page (and a CSV) of what a study found.

As in ``optuna.visualization``, the figures are drawn from a data object computed first:
``report_info(study) -> ReportInfo`` (``data`` collects, ``findings`` puts the rules in words), then
``figures`` and ``page`` only draw it; ``writer`` writes the files. Tests check the info, not the pixels. Nothing
here loads torch.
"""

from tuner.report.data import ReportInfo, TrialRow
from tuner.report.page import table_rows, write_csv
from tuner.report.writer import report_info, write_report

__all__ = ["ReportInfo", "TrialRow", "report_info", "table_rows", "write_csv", "write_report"]
