"""``medseg data scan``: read every pair under a root, summarise it per modality/data set and list every
problem found — without stopping at the first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.data.catalog import CatalogEntry, Problem, discover
from medseg.data.loading import load_samples
from medseg.data.normalize import MaskMode
from medseg.errors import MedsegError


@dataclass
class DatasetSummary:
    """Statistics of one (modality, dataset) group."""

    modality: str
    dataset: str
    files: int = 0
    labeled: int = 0
    slices: int = 0
    unreadable: int = 0
    empty_masks: int = 0
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)

    def numbers(self) -> dict[str, object]:
        """The summary with numbers as numbers (JSON): size ranges as min/max, foreground % as a float (``None``
        where nothing was measured)."""
        def lo(v: list[int]) -> int | None:
            return min(v) if v else None

        def hi(v: list[int]) -> int | None:
            return max(v) if v else None

        return {"modality": self.modality, "dataset": self.dataset, "files": self.files, "labeled": self.labeled,
                "slices": self.slices, "bad": self.unreadable, "empty": self.empty_masks,
                "height_min": lo(self.heights), "height_max": hi(self.heights), "width_min": lo(self.widths),
                "width_max": hi(self.widths),
                "foreground_percent": round(100 * float(np.mean(self.coverage)), 3) if self.coverage else None}

    def row(self) -> dict[str, object]:
        def rng(v: list[int]) -> str:
            if not v:
                return "-"
            return str(v[0]) if min(v) == max(v) else f"{min(v)}–{max(v)}"

        return {
            "modality": self.modality, "dataset": self.dataset, "files": self.files, "labeled": self.labeled,
            "slices": self.slices, "bad": self.unreadable, "empty": self.empty_masks,
            "height": rng(self.heights), "width": rng(self.widths),
            "fg_%": f"{100 * float(np.mean(self.coverage)):.1f}" if self.coverage else "-",
        }


@dataclass
class ScanReport:
    root: Path
    groups: list[DatasetSummary]
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def rows(self) -> list[dict[str, object]]:
        return [g.row() for g in self.groups]

    def to_markdown(self) -> str:
        rows = self.rows()
        lines = [f"# Scan of `{self.root}`", ""]
        if rows:
            cols = list(rows[0])
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
        lines += ["", f"## Problems ({len(self.errors)} errors, {len(self.problems) - len(self.errors)} warnings)", ""]
        lines += [f"- **{p.severity}** `{p.path}`: {p.problem}" for p in self.problems] or ["none"]
        return "\n".join(lines) + "\n"


def scan(root: str | Path, *, mask_mode: MaskMode = "strict",
         progress: Callable[[CatalogEntry], None] | None = None,
         discovered: tuple[list[CatalogEntry], list[Problem]] | None = None) -> ScanReport:
    """Discover and read every pair under ``root``.

    Args:
        root: data root in the catalog layout (:mod:`medseg.data.catalog`).
        mask_mode: mask value policy used when reading masks.
        progress: called once per file (e.g. to advance a progress bar).
        discovered: the result of :func:`~medseg.data.catalog.discover` for ``root`` if the caller already has
            it (saves walking the tree twice).
    """
    entries, found = discovered if discovered is not None else discover(root)
    problems = list(found)
    groups: dict[tuple[str, str], DatasetSummary] = {}
    for e in entries:
        g = groups.setdefault((e.modality, e.dataset), DatasetSummary(e.modality, e.dataset))
        g.files += 1
        try:
            samples = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode=mask_mode)
        except MedsegError as exc:
            g.unreadable += 1
            problems.append(Problem(getattr(exc, "path", None) or str(e.image), getattr(exc, "problem", str(exc))))
        else:
            labeled = any(s.mask is not None for s in samples)
            g.labeled += int(labeled)
            for s in samples:
                g.slices += 1
                g.heights.append(s.shape[0])
                g.widths.append(s.shape[1])
                if s.mask is not None:
                    frac = float(np.count_nonzero(s.mask)) / s.mask.size
                    g.coverage.append(frac)
                    if frac == 0:
                        g.empty_masks += 1
                        problems.append(Problem(str(s.mask_path or s.image_path),
                                                f"mask of {s.case_id} is empty", "warning"))
        if progress is not None:
            progress(e)
    ordered = sorted(problems, key=lambda p: p.severity != "error")  # errors first, order otherwise kept
    return ScanReport(Path(root), [groups[k] for k in sorted(groups)], ordered)
