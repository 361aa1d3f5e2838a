"""A sample of the validation images the pick predicts otherwise than the reference (issue 30, item 4): thumbnails
with both predicted class names and the true one. The trial recorded which images and both predictions
(``tuner.guardrails.flipped_sample``); the pixels are read here from the decoded validation array in the study's
cache (``tuner.data.load_dataset``: memory-mapped, the split the study scored, held-out images apart). A study
whose images cannot be read here (another machine's cache, a moved folder) gets a note, not an error."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuner import results
from tuner.report.data import ReportInfo

SHOWN_PX = 96  # the thumbnail's side on the page: small images are scaled up (pixelated), large ones down


@dataclass(frozen=True)
class Thumb:
    index: int  # in the validation split the study scored
    truth: str
    reference: str  # the reference's predicted class
    pick: str  # the pick's predicted class
    png: str  # base64 PNG of the image as the model saw it (at the study's resolution)


def _png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(image, np.uint8).transpose(1, 2, 0))).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _validation_images(workload: dict[str, Any], studies_dir: str | Path) -> tuple[Any, tuple[str, ...]]:
    """(the validation split the study scored, the class names), read from the study's cache."""
    from tuner import logs
    from tuner.data import load_dataset

    with logs.to(lambda line: None):  # the report says nothing of reading the cache
        data = load_dataset(
            workload["data"],
            workload.get("resolution"),
            workload.get("mean"),
            workload.get("std"),
            int(workload.get("seed", 0)),
            Path(studies_dir) / "cache",
            float(workload.get("holdout") or 0.0),
        )
    return data.val, data.classes


def flipped_thumbnails(info: ReportInfo, studies_dir: str | Path | None) -> tuple[list[Thumb], str | None]:
    """The pick's recorded flipped images as thumbnails, and a note where they cannot be shown."""
    pick = results.fastest_feasible(r.point for r in info.completed)
    if pick is None or studies_dir is None:
        return [], None
    sample = info.row(pick.point.number).metrics.get("flipped") or []
    if not sample:
        return [], None
    try:
        split, classes = _validation_images(info.workload, studies_dir)
        if len(split) != info.validation_images:
            raise ValueError(f"{len(split)} validation images where the study scored {info.validation_images}")
        names = list(info.reference_guardrails.get("classes") or classes)

        def name(k: int) -> str:
            return str(names[k]) if 0 <= k < len(names) else f"class {k}"

        return [
            Thumb(int(i), name(int(split.labels[i])), name(ref), name(mine), _png(split.images[i]))
            for i, ref, mine in sample
        ], None
    except Exception as err:  # noqa: BLE001 - the page is written without them, saying why
        return [], f"the flipped images cannot be shown here ({type(err).__name__}: {str(err)[:160]})"


def thumbnails_html(info: ReportInfo, thumbs: list[Thumb], note: str | None) -> str:
    """The thumbnails as a grid of figures ("" where the pick flipped nothing, or without a study directory)."""
    if note:
        return f'<p class="note">{html.escape(note)}</p>'
    if not thumbs:
        return ""
    pick = results.fastest_feasible(r.point for r in info.completed)
    number = pick.point.number if pick is not None else "?"
    cells = "".join(
        f'<figure class="flip"><img alt="validation image {t.index}" width="{SHOWN_PX}" height="{SHOWN_PX}" '
        f'src="data:image/png;base64,{t.png}"><figcaption>#{t.index} ({html.escape(t.truth)})<br>'
        f"reference: {html.escape(t.reference)}<br>#{number}: {html.escape(t.pick)}</figcaption></figure>"
        for t in thumbs
    )
    return (
        f'<h3>Images the pick predicts otherwise</h3><p class="note">A sample of the validation images trial '
        f"#{number} predicts otherwise than the reference (true class in brackets).</p>"
        f'<div class="flips">{cells}</div>'
    )
