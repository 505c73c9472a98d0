"""``medseg evaluate``: match predicted masks to ground-truth masks by file stem and score every slice."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data import discover
from medseg.data.loading import case_key, file_stem, read_mask, supported_files
from medseg.data.normalize import MaskMode
from medseg.errors import InvalidInputError, MedsegError
from medseg.evaluation.plots import save_boxplots
from medseg.evaluation.score import score_masks
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
    """What ``medseg evaluate`` found and wrote.

    ``missing``: ground-truth masks without a prediction (scored as empty predictions or skipped, by policy);
    ``unmatched``: predictions without a ground truth (extra files); ``failed``: (file, problem) of pairs not scored
    because a file was unusable (``on_error="skip"``).
    """

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    csv: Path
    markdown: Path
    plot: Path | None
    unmatched: list[str]
    missing: list[str] = field(default_factory=list)
    matched: int = 0
    missing_policy: str = "error"
    failed: list[tuple[str, str]] = field(default_factory=list)


SUMMARY_COLUMNS = ["modality", "dataset", "n", "dice_mean", "dice_median", "iou_mean", "nsd_mean", "hd95_median"]
MISSING_POLICIES = ("error", "empty", "skip")


def evaluate_folders(pred: str | Path, gt: str | Path, out_dir: str | Path, *, config: MetricConfig | None = None,
                     modality: str | None = None, dataset: str | None = None, mask_mode: MaskMode = "strict",
                     missing: str = "error", progress: Callable[[int], None] | None = None,
                     on_error: str = "stop", predicted: Mapping[Path, np.ndarray] | None = None) -> EvaluationResult:
    r"""Score predictions against ground truth; no case is dropped without a word.

    Args:
        pred: a mask file or a folder of them (``*_overlay.png`` files are ignored).
        gt: a mask file, a catalog tree (``<modality>/<dataset>/masks``, giving modality and dataset per image) or
            any folder of masks. Files pair up by :func:`~medseg.data.loading.case_key`.
        out_dir: receives ``metrics.csv`` (per image/slice), ``summary.md`` (counts, then per modality and
            dataset) and ``boxplots.png``.
        modality, dataset: override the labels of every row.
        mask_mode: how both sides' mask values are read (:func:`medseg.data.normalize.to_label_map`):
            ``strict`` (default) refuses anything but {0, one value}; ``nonzero`` takes every non-zero value
            as foreground; ``labels`` scores label maps CVPR24-style (mean over labels ≥ 1).
        missing: a ground-truth case without a prediction is an ``error`` (default), scored as an ``empty``
            prediction, or ``skip``\ ped and listed.
        on_error: an unreadable or mismatched prediction or mask ``stop``\ s the run (its
            :class:`InvalidInputError`), or is ``skip``\ ped: listed in ``summary.md`` and the result's ``failed``.
        predicted: a model's masks held in memory, image file → (Z, H, W) mask (``medseg evaluate --model``,
            :func:`medseg.inference.files.predict_files` with ``keep_masks``): the image files pair with the ground
            truth as prediction files would and their masks are scored as they are, never written and read back;
            ``pred`` is then the images' folder (shown in ``summary.md``).

    Raises:
        MedsegError: nothing could be paired, or cases are missing under ``missing="error"``. Unreadable or
        mismatched files raise :class:`InvalidInputError` naming them.
    """
    if missing not in MISSING_POLICIES:
        raise MedsegError(f"--missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")
    pred, gt, out_dir = Path(pred), Path(gt), Path(out_dir)
    truths = _ground_truth(gt, modality, dataset)
    if predicted is not None:
        preds = list(predicted)
    else:
        preds = [pred] if pred.is_file() else [f for f in supported_files(pred) if not f.stem.endswith("_overlay")]
    metric = SegmentationMetric(config or MetricConfig(), label_maps=mask_mode == "labels")
    unmatched: list[str] = []
    pairs: list[tuple[Path | None, GroundTruth]] = []
    used: set[Path] = set()
    keys: dict[Path, str] = {}
    for p in preds:
        # the prediction's own name first (a catalogue's case ``x_mask`` is an image so named), then its case key
        key = file_stem(p) if file_stem(p) in truths else case_key(p)
        cands = truths.get(key)
        if not cands:
            unmatched.append(str(p))
            continue
        t = _match(p, cands)
        used.add(t.mask)
        keys[t.mask] = key
        pairs.append((p, t))
    absent = [t for ts in truths.values() for t in ts if t.mask not in used]
    if absent and missing == "error" and pairs:
        shown = ", ".join(str(t.mask) for t in absent[:3])
        raise MedsegError(f"{len(absent)} ground-truth case(s) have no prediction in {pred}, e.g. {shown}; use "
                          "--missing empty to score them as empty predictions or --missing skip to list them")
    if missing == "empty":
        pairs += [(None, t) for t in absent]
    failed: list[tuple[str, str]] = []
    for p, t in pairs:
        try:
            gm, gvol = read_mask(t.mask, mask_mode)
            if p is None:
                pm = np.zeros_like(gm)
            else:
                if predicted is not None:  # a model's masks, scored as they are
                    pm = np.asarray(predicted[p]).astype(gm.dtype).reshape(-1, *np.shape(predicted[p])[-2:])
                else:
                    pm, _ = read_mask(p, mask_mode)
                if pm.shape != gm.shape:
                    raise InvalidInputError(p, f"prediction size {pm.shape[1:]}×{pm.shape[0]} slices differs from "
                                               f"the ground truth {gm.shape[1:]}×{gm.shape[0]} slices of {t.mask}")
        except InvalidInputError as exc:
            if on_error != "skip":
                raise
            failed.append((exc.path or str(p), exc.problem))
            if progress is not None:
                progress(1)
            continue
        spacing = (float(gvol.spacing[1]), float(gvol.spacing[2]))
        key = keys.get(t.mask) or case_key(t.mask)
        score_masks(metric, pm, gm, spacing=spacing, case=key, modality=t.modality, dataset=t.dataset,
                    prediction="missing (scored empty)" if p is None else "found")
        if progress is not None:
            progress(1)
    rows = metric.rows
    if not rows:
        raise MedsegError(f"no prediction in {pred} matches a ground-truth mask in {gt} by file name")
    summary = metric.summary(by=("modality", "dataset"))
    csv = write_csv(rows, out_dir / "metrics.csv")
    md = out_dir / "summary.md"
    n_found = sum(1 for p, _ in pairs if p is not None)
    counts = (f"| cases | count |\n|---|---|\n| ground truth | {sum(len(v) for v in truths.values())} |\n"
              f"| predicted (paired) | {n_found} |\n"
              f"| missing ({'scored as empty' if missing == 'empty' else 'skipped'}) | {len(absent)} |\n"
              f"| extra (prediction without ground truth) | {len(unmatched)} |\n"
              f"| not scored (unusable files) | {len(failed)} |\n")
    lists = ""
    if absent and missing == "skip":
        lists += "\nSkipped ground truth (no prediction):\n\n" + "".join(f"- `{t.mask}`\n" for t in absent)
    if unmatched:
        lists += "\nPredictions without ground truth:\n\n" + "".join(f"- `{u}`\n" for u in unmatched)
    if failed:
        lists += "\nNot scored (unusable files):\n\n" + "".join(f"- `{f}`: {why}\n" for f, why in failed)
    atomic_write_text(md, "# Evaluation\n\n" f"Predictions: `{pred}`; ground truth: `{gt}`; {len(rows)} images/slices "
                      f"scored; masks read as `{mask_mode}`.\n\n" + counts + lists + "\n"
                      + format_markdown_table(summary, digits=3, columns=SUMMARY_COLUMNS)
                      + "\n![box plots](boxplots.png)\n")
    plot = save_boxplots(rows, out_dir / "boxplots.png")
    return EvaluationResult(rows, summary, csv, md, plot, unmatched, [str(t.mask) for t in absent], n_found,
                            missing, failed)
