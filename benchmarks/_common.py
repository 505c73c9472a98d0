"""Timing helpers shared by the benchmark scripts: medians over repeats, ratio tables."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs; also the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def ratio_rows(times: dict[str, float], baseline: str, unit_count: int, unit: str) -> list[dict[str, Any]]:
    """Rows: method, median ms, ms per unit, speed relative to ``baseline`` (>1 = faster)."""
    base = times[baseline]
    return [
        {"method": k, "median_ms": 1e3 * v, f"ms_per_{unit}": 1e3 * v / unit_count, f"speed_vs_{baseline}": base / v}
        for k, v in times.items()
    ]


def emit(title: str, rows: list[dict[str, Any]], out: Path | None) -> str:
    from medseg.evaluation import format_markdown_table, write_csv

    text = f"### {title}\n\n" + format_markdown_table(rows, digits=3)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        slug = title.lower().replace(" ", "_").replace("²", "2").replace("×", "x")
        slug = "".join(c for c in slug if c.isalnum() or c == "_")
        write_csv(rows, out / f"{slug}.csv")
        (out / f"{slug}.md").write_text(text)
    return text
