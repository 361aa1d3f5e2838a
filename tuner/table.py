"""Plain-text tables: columns padded to their widest cell (the Pareto table, the re-measure, verify's checks)."""

from __future__ import annotations

from collections.abc import Sequence


def aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    """One line per row, each column left-aligned to its widest cell, trailing blanks stripped."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))] if rows else []
    return ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
