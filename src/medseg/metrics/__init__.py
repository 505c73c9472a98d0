"""Segmentation metrics: Dice, IoU, precision, recall, NSD, HD, HD95 — one implementation each,
functional and as a cumulative object. Empty-mask rules are documented in :mod:`medseg.metrics.overlap`
and :mod:`medseg.metrics.surface`."""

from medseg.metrics.overlap import Confusion, confusion, dice, dice_iou_torch, iou, precision, recall
from medseg.metrics.segmentation import (
    METRIC_NAMES,
    MetricConfig,
    SegmentationMetric,
    compute_label_metrics,
    compute_metrics,
    group_means,
    summarize_rows,
)
from medseg.metrics.surface import (
    SurfaceDistances,
    SurfaceMetrics,
    hausdorff_distance,
    mask_boundary,
    normalized_surface_distance,
    surface_distances,
    surface_metrics,
)

__all__ = [
    "METRIC_NAMES",
    "Confusion",
    "MetricConfig",
    "SegmentationMetric",
    "SurfaceDistances",
    "SurfaceMetrics",
    "compute_label_metrics",
    "compute_metrics",
    "confusion",
    "dice",
    "dice_iou_torch",
    "group_means",
    "hausdorff_distance",
    "iou",
    "mask_boundary",
    "normalized_surface_distance",
    "precision",
    "recall",
    "summarize_rows",
    "surface_distances",
    "surface_metrics",
]
