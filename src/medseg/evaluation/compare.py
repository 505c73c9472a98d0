"""``medseg evaluate``: match predicted masks to ground-truth masks by file stem and score every slice."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.data import discover
from medseg.data.loading import case_key, read_mask, supported_files
from medseg.errors import InvalidInputError, MedsegError
from medseg.evaluation.plots import save_boxplots
from medseg.evaluation.tables import format_markdown_table, write_csv
from medseg.metrics import MetricConfig, SegmentationMetric
from medseg.utils.atomic import atomic_write_text


@dataclass
class GroundTruth:
    mask: Path
    modality: str
    dataset: str


def _ground_truth(gt_root: Path, modality: str | None, dataset: str | None) -> dict[str, list[GroundTruth]]:
    found: dict[str, list[GroundTruth]] = {}
    if gt_root.is_file():
        found[case_key(gt_root)] = [GroundTruth(gt_root, modality or "unknown", dataset or "unknown")]
        return found
    entries, _ = discover(gt_root)
    for e in entries:
        if e.mask is not None:
            found.setdefault(e.case_id, []).append(GroundTruth(e.mask, modality or e.modality, dataset or e.dataset))
    if found:
        return found
    for f in supported_files(gt_root):
        found.setdefault(case_key(f), []).append(GroundTruth(f, modality or "unknown", dataset or "unknown"))
    return found


def _match(pred: Path, candidates: list[GroundTruth]) -> GroundTruth:
    """The ground truth for ``pred``; same-named cases of several datasets are told apart by the dataset and
    modality folder names in the prediction's path."""
    if len(candidates) == 1:
        return candidates[0]
    parts = set(pred.parts)
    hits = [c for c in candidates if c.dataset in parts] or candidates
    hits = [c for c in hits if c.modality in parts] or hits
    if len(hits) != 1:
        raise InvalidInputError(pred, f"matches {len(hits)} ground-truth masks by name "
                                      f"({', '.join(str(c.mask) for c in hits[:3])}); keep the dataset folders in "
                                      "the prediction path (as `medseg predict` does)")
    return hits[0]


@dataclass
class EvaluationResult:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    csv: Path
    markdown: Path
    plot: Path | None
    unmatched: list[str]


SUMMARY_COLUMNS = ["modality", "dataset", "n", "dice_mean", "dice_median", "iou_mean", "nsd_mean", "hd95_median"]


def evaluate_folders(pred: str | Path, gt: str | Path, out_dir: str | Path, *, config: MetricConfig | None = None,
                     modality: str | None = None, dataset: str | None = None,
                     progress: Callable[[int], None] | None = None) -> EvaluationResult:
    """Score predictions against ground truth.

    Args:
        pred: a mask file or a folder of them (``*_overlay.png`` files are ignored).
        gt: a mask file, a catalog tree (``<modality>/<dataset>/masks``, giving modality and dataset per image) or
            any folder of masks. Files pair up by stem (mask suffixes such as ``_mask`` are ignored).
        out_dir: receives ``metrics.csv`` (per image/slice), ``summary.md`` (per modality and dataset) and
            ``boxplots.png``.
        modality, dataset: override the labels of every row.

    Raises:
        MedsegError: nothing could be paired. Single unreadable or mismatched files raise
        :class:`InvalidInputError` naming them.
    """
    pred, gt, out_dir = Path(pred), Path(gt), Path(out_dir)
    truths = _ground_truth(gt, modality, dataset)
    preds = [pred] if pred.is_file() else [f for f in supported_files(pred) if not f.stem.endswith("_overlay")]
    metric = SegmentationMetric(config or MetricConfig())
    unmatched = []
    for p in preds:
        cands = truths.get(case_key(p))
        if not cands:
            unmatched.append(str(p))
            continue
        t = _match(p, cands)
        pm, _ = read_mask(p, "nonzero")
        gm, gvol = read_mask(t.mask, "nonzero")
        if pm.shape != gm.shape:
            raise InvalidInputError(p, f"prediction size {pm.shape[1:]}×{pm.shape[0]} slices differs from the "
                                       f"ground truth {gm.shape[1:]}×{gm.shape[0]} slices of {t.mask}")
        spacing = (float(gvol.spacing[1]), float(gvol.spacing[2]))
        for z in range(pm.shape[0]):
            case = case_key(p) if pm.shape[0] == 1 else f"{case_key(p)}_z{z:03d}"
            metric(pm[z] > 0, gm[z] > 0, spacing=spacing, case=case, modality=t.modality, dataset=t.dataset)
        if progress is not None:
            progress(1)
    rows = metric.rows
    if not rows:
        raise MedsegError(f"no prediction in {pred} matches a ground-truth mask in {gt} by file name")
    summary = metric.summary(by=("modality", "dataset"))
    csv = write_csv(rows, out_dir / "metrics.csv")
    md = out_dir / "summary.md"
    atomic_write_text(md, "# Evaluation\n\n" f"Predictions: `{pred}`; ground truth: `{gt}`; {len(rows)} images/slices"
                      f"{f'; {len(unmatched)} predictions without ground truth' if unmatched else ''}.\n\n"
                      + format_markdown_table(summary, digits=3, columns=SUMMARY_COLUMNS)
                      + "\n![box plots](boxplots.png)\n")
    plot = save_boxplots(rows, out_dir / "boxplots.png")
    return EvaluationResult(rows, summary, csv, md, plot, unmatched)
