"""Writing result rows as CSV and Markdown (atomically)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.utils.atomic import atomic_write_text


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _fmt(v: Any, digits: int) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_markdown_table(rows: Sequence[dict[str, Any]], digits: int = 4, columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (floats with ``digits`` decimals)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or _columns(rows))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(r.get(c, ""), digits) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``rows`` as CSV (union of keys as columns)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_columns(rows), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_markdown_table(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None,
                         digits: int = 4) -> Path:
    text = (f"# {title}\n\n" if title else "") + format_markdown_table(rows, digits)
    atomic_write_text(path, text)
    return Path(path)
