"""The report written: ``report_info`` (the data with its findings) and ``write_report`` (the HTML page and the
CSV, each whole or not at all)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna

from tuner.errors import ConfigError
from tuner.report.data import ReportInfo, collect
from tuner.report.findings import findings
from tuner.report.page import render_html, write_csv
from tuner.report.thumbnails import flipped_thumbnails


def report_info(study: optuna.Study, studies_dir: str | Path | None = None) -> ReportInfo:
    """``studies_dir``: where the study's cache holds its decoded images, for the pick's flipped thumbnails (None:
    none shown)."""
    info = collect(study)
    flips, note = flipped_thumbnails(info, studies_dir)
    return replace(info, findings=findings(info), flips=flips, flips_note=note)


def write_report(
    study: optuna.Study, out: str | Path, csv: str | Path | None = None, studies_dir: str | Path | None = None
) -> ReportInfo:
    """Write the HTML page (and the CSV), each whole or not at all: a bad path is one line, nothing left behind."""
    targets = [Path(out)] + ([Path(csv)] if csv is not None else [])
    for path in targets:
        if path.is_dir():
            raise ConfigError(f"{path} is a directory; pass a file path such as {path / 'report.html'}.")
    info = report_info(study, studies_dir)
    _write_whole(targets[0], lambda p: p.write_text(render_html(info), encoding="utf-8"))
    if csv is not None:
        _write_whole(targets[1], lambda p: write_csv(info, p))
    return info


def _write_whole(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(path)
    except OSError as err:
        raise ConfigError(f"cannot write {path}: {err.strerror or err}; pass a writable path.") from None
    finally:
        tmp.unlink(missing_ok=True)
