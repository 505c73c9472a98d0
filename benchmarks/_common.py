"""Helpers shared by the benchmark scripts: medians and spreads over repeats, ratio tables, and the library
versions every table is printed with."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_times(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Wall times (s) of ``repeats`` runs of ``fn()`` after ``warmup`` runs; also the last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs; also the last result."""
    times, out = run_times(fn, repeats, warmup)
    return statistics.median(times), out


def spread(values: list[float]) -> str:
    """``min–max`` of a list of numbers (3 significant digits), for the spread column of a table."""
    return f"{min(values):.3g}–{max(values):.3g}"


def versions() -> dict[str, str]:
    """Versions of the libraries a benchmark result depends on (absent ones are left out)."""
    import platform

    out = {"python": platform.python_version()}
    for name, mod in (("medseg", "medseg"), ("torch", "torch"), ("numpy", "numpy"), ("opencv", "cv2"),
                      ("monai", "monai"), ("onnxruntime", "onnxruntime")):
        try:
            out[name] = __import__(mod).__version__
        except Exception:  # not installed: not part of this result
            continue
    import torch

    out["threads"] = str(torch.get_num_threads())
    return out


def versions_line() -> str:
    return "; " + ", ".join(f"{k} {v}" for k, v in versions().items())


def mark_adopted(summary: list[dict[str, Any]], key: str, baseline: str, margin: float = 0.01) -> None:
    """The leave-datasets-out adoption rule of the held-out studies, written into each row as ``adopt``: a variant
    (row ``key`` ≠ ``baseline``) is adopted only if its held-out validation Dice (``val_held_out``) beats the
    baseline's and its trained datasets' validation Dice (``val_trained``) is at most ``margin`` lower."""
    ref = next(s for s in summary if s[key] == baseline)
    for s in summary:
        s["adopt"] = (s[key] != baseline and s["val_held_out"] > ref["val_held_out"]
                      and s["val_trained"] >= ref["val_trained"] - margin)


def emit(title: str, rows: list[dict[str, Any]], out: Path | None) -> str:
    from medseg.evaluation import format_markdown_table, write_csv

    text = (f"### {title}\n\n" + format_markdown_table(rows, digits=3)
            + "\nRan with " + versions_line()[2:] + ".\n")
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        slug = title.lower().replace(" ", "_").replace("²", "2").replace("×", "x")
        slug = "".join(c for c in slug if c.isalnum() or c == "_")
        write_csv(rows, out / f"{slug}.csv")
        (out / f"{slug}.md").write_text(text)
    return text


def reference_split(data_root: Path) -> list:
    """The benchmarks' split of the real data: every labelled pair, ``stratified_split(test=0.2, val=0.1, seed=0)``
    (per-dataset seeded, group-aware) — what ``medseg data split ROOT --test 0.2 --val 0.1 --seed 0`` writes."""
    from medseg.data import discover, stratified_split

    entries = [e for e in discover(data_root)[0] if e.mask is not None]
    return stratified_split(entries, test=0.2, val=0.1, seed=0)
