"""Per-image scores of a model on catalogue entries, cached as a CSV (the rows paired tests compare)."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medseg.data import CatalogEntry, Sample, load_samples
from medseg.data.geometry import boxes_from_mask
from medseg.evaluation.tables import write_csv
from medseg.metrics import MetricConfig, SegmentationMetric


class MaskPredictor(Protocol):
    """Anything with ``Predictor.predict``'s shape: a list of (H, W, 3) images → results with ``.mask`` (and, for
    ``gt_boxes``, a second argument: one (K, 4) box array per image)."""

    def predict(self, images: Sequence[np.ndarray], *args: Any) -> Sequence[Any]: ...


def score_masks(metric: SegmentationMetric, pred: np.ndarray, gt: np.ndarray, *, spacing: tuple[float, float],
                case: str, modality: str, dataset: str, **columns: Any) -> None:
    """Score one image's or volume's predicted mask against its ground truth into ``metric``: the one scoring step
    of ``medseg evaluate`` (mask files or a model's in-memory predictions) and of :func:`score_entries`
    (experiments).

    Args:
        pred, gt: (H, W) or (Z, H, W) masks of one case, same shape (any dtype; non-zero is foreground, or label
            values for a label-map metric).
        spacing: the in-plane (row, column) spacing distances are measured in (pixels for 2-D files, mm for DICOM /
            NIfTI slices).
        case: the case name; the slices of a volume are scored as ``<case>_z###``.
        modality, dataset, columns: the row's labels.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"{case}: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if pred.ndim == 2:
        metric(pred, gt, spacing=spacing, case=case, modality=modality, dataset=dataset, **columns)
        return
    for z in range(pred.shape[0]):
        name = case if pred.shape[0] == 1 else f"{case}_z{z:03d}"
        metric(pred[z], gt[z], spacing=spacing, case=name, modality=modality, dataset=dataset, **columns)


def score_entries(entries: Sequence[CatalogEntry], predictor_for: Callable[[CatalogEntry], MaskPredictor], *,
                  csv_path: str | Path | None = None, config: MetricConfig | None = None,
                  columns: Callable[[CatalogEntry], dict[str, str]] | None = None,
                  gt_boxes: bool = False,
                  load: Callable[[CatalogEntry], list[Sample]] | None = None) -> list[dict[str, str]]:
    """Predict every sample of ``entries`` at native resolution and score it against its mask, with the metrics of
    ``medseg evaluate`` (:class:`SegmentationMetric`, distances in the image's physical spacing: pixels for 2-D
    files, millimetres for DICOM / NIfTI slices).

    Args:
        entries: images + masks (every sample of a stack file is scored).
        predictor_for: the predictor of one entry (lets callers route entries to models or output channels).
        csv_path: per-image rows are written here; when the file exists it is read back instead (cache).
        config: metric settings (default NSD tolerance 2 px).
        columns: extra per-entry columns (e.g. the CMMC subset).
        gt_boxes: prompt box-promptable models with one tight box per ground-truth component of ≥ 10 px (the
            box-prompted upper reference); otherwise every model runs prompt-free.
        load: reads an entry's samples (default :func:`medseg.data.load_samples` with non-zero masks); a caller
            scoring many models on the same images passes a memoising one.

    Returns:
        One row per sample: case, modality, dataset, the extra columns, ``task`` where the prediction names one (a
        task model; the ``universal`` model adds ``task_probability`` and ``engine``), and every metric, as
        strings (the CSV's form, so a cached and a fresh call return the same).
    """
    path = Path(csv_path) if csv_path is not None else None
    if path is not None and path.is_file():
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    metric = SegmentationMetric(config or MetricConfig(tolerance=2.0))
    for e in entries:
        predictor = predictor_for(e)
        extra = columns(e) if columns is not None else {}
        samples = (load(e) if load is not None else
                   load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero"))
        for s in samples:
            gt = s.binary_mask()
            pred = (predictor.predict([s.image], [boxes_from_mask(gt, per_component=True, min_area=10)])[0]
                    if gt_boxes else predictor.predict([s.image])[0])
            named = {k: getattr(pred, k, None) for k in ("task", "task_probability", "engine")}
            score_masks(metric, pred.mask, gt, spacing=s.spacing, case=s.case_id, modality=s.modality,
                        dataset=s.dataset, **extra, **{k: v for k, v in named.items() if v is not None})
    if path is not None:
        write_csv(metric.rows, path)
    return [{k: str(v) for k, v in r.items()} for r in metric.rows]
