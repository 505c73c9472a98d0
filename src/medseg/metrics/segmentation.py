"""All per-image metrics in one call, and a cumulative metric object (MONAI style).

``compute_metrics`` returns ``dice, iou, precision, recall, nsd, hd, hd95`` for a binary pair;
``compute_label_metrics`` does the CVPR24 per-label average for label maps. ``SegmentationMetric`` keeps
one row per image (with any metadata you pass, e.g. modality and dataset) and summarises them.

CVPR24 leaderboard mode (``leaderboard=True``): NSD is the challenge's (``nsd_mode="cvpr24"``, see
:mod:`medseg.metrics.surface`), only computed where the case's Dice > 0.2 and 0 otherwise, as in the challenge's
``compute_metrics.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.metrics.overlap import (
    confusion,
    dice_from_confusion,
    iou_from_confusion,
    precision_from_confusion,
    recall_from_confusion,
)
from medseg.metrics.surface import NsdMode, surface_metrics

METRIC_NAMES: tuple[str, ...] = ("dice", "iou", "precision", "recall", "nsd", "hd", "hd95")


@dataclass(frozen=True)
class MetricConfig:
    """How metrics are computed.

    Args:
        tolerance: NSD tolerance in physical units (default 2.0 → 2 px at unit spacing).
        percentile: robust Hausdorff percentile (default 95).
        leaderboard: CVPR24 rules — the challenge's NSD, and NSD only where Dice > 0.2, else 0.
        empty_distance: HD/HD95 when exactly one mask is empty (``None`` = image diagonal).
        nsd_mode: ``boundary``, ``subpixel`` or ``cvpr24`` (:mod:`medseg.metrics.surface`); ``None`` =
            ``cvpr24`` in leaderboard mode, else ``boundary``.
        surface: compute the surface metrics (NSD, HD, HD95); ``False``: they are NaN (overlap metrics only,
            for large evaluation grids).
    """

    tolerance: float = 2.0
    percentile: float = 95.0
    leaderboard: bool = False
    empty_distance: float | None = None
    nsd_mode: NsdMode | None = None
    surface: bool = True

    @property
    def resolved_nsd_mode(self) -> NsdMode:
        if self.nsd_mode is not None:
            return self.nsd_mode
        return "cvpr24" if self.leaderboard else "boundary"


def compute_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    *,
    spacing: float | Sequence[float] | None = None,
    config: MetricConfig | None = None,
) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` for one binary pair.

    Args:
        pred, gt: same-shape (H, W) masks, non-zero = foreground.
        spacing: pixel size in array order (default 1).
        config: :class:`MetricConfig` (defaults: τ = 2, HD95, not leaderboard).

    Returns:
        dict metric name → float. Dice/IoU/NSD in [0, 1]; HD/HD95 in physical units.
    """
    cfg = config or MetricConfig()
    c = confusion(pred, gt)
    d = dice_from_confusion(c)
    row = {"dice": d, "iou": iou_from_confusion(c), "precision": precision_from_confusion(c),
           "recall": recall_from_confusion(c)}
    if not cfg.surface:
        row.update(nsd=float("nan"), hd=float("nan"), hd95=float("nan"))
        return row
    s = surface_metrics(pred, gt, tolerance=cfg.tolerance, spacing=spacing, percentile=cfg.percentile,
                        empty_distance=cfg.empty_distance, nsd_mode=cfg.resolved_nsd_mode)
    row.update(nsd=s.nsd, hd=s.hd, hd95=s.hd95)
    if cfg.leaderboard and d <= 0.2:
        row["nsd"] = 0.0
    return row


def compute_label_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    *,
    spacing: float | Sequence[float] | None = None,
    config: MetricConfig | None = None,
    labels: Iterable[int] | None = None,
) -> dict[str, float]:
    """CVPR24-style case score for label maps: the mean over labels of the binary metrics.

    Args:
        pred_labels, gt_labels: same-shape integer label maps, 0 = background.
        labels: foreground labels to score; default every non-zero label present in either map (CVPR uses
            ``1..max(gt)``, which gives NaN for gaps — medseg skips labels absent from both). Label 0 is the
            background and is never scored as foreground.

    Returns:
        dict metric → mean over labels; ``n_labels`` holds the count (an all-background pair scores as
        one "both empty" label: 1 / 0).
    """
    gt_l, pr_l = np.asarray(gt_labels), np.asarray(pred_labels)
    if labels is not None and 0 in set(labels):
        raise ValueError("label 0 is the background and cannot be scored as foreground; pass labels ≥ 1")
    todo = sorted(set(labels) if labels is not None else (set(np.unique(gt_l)) | set(np.unique(pr_l))) - {0})
    if not todo:
        row = compute_metrics(pr_l > 0, gt_l > 0, spacing=spacing, config=config)
        return {**row, "n_labels": 0.0}
    rows = [compute_metrics(pr_l == lab, gt_l == lab, spacing=spacing, config=config) for lab in todo]
    out = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}
    out["n_labels"] = float(len(todo))
    return out


class SegmentationMetric:
    """Cumulative per-image metrics (like MONAI's ``CumulativeIterationMetric``).

    Example::

        metric = SegmentationMetric(MetricConfig(tolerance=2.0))
        for pred, gt, s in cases:
            metric(pred, gt, case=s.case_id, modality=s.modality, dataset=s.dataset)
        table = metric.summary(by=("modality",))

    Shape:
        ``pred``/``gt``: (H, W) masks (bool or 0/1) or label maps with ``label_maps=True``.
    """

    def __init__(self, config: MetricConfig | None = None, *, label_maps: bool = False) -> None:
        self.config = config or MetricConfig()
        self.label_maps = label_maps
        self._rows: list[dict[str, Any]] = []

    def __call__(self, pred: np.ndarray, gt: np.ndarray, *, spacing: float | Sequence[float] | None = None,
                 **meta: Any) -> dict[str, Any]:
        fn = compute_label_metrics if self.label_maps else compute_metrics
        row = {**meta, **fn(pred, gt, spacing=spacing, config=self.config)}
        self._rows.append(row)
        return row

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add rows computed elsewhere (e.g. gathered from other ranks)."""
        self._rows.extend(rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def reset(self) -> None:
        self._rows.clear()

    def summary(self, by: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Mean, median and count of each metric per group (plus an ``all`` row when grouping)."""
        return summarize_rows(self._rows, by)


def summarize_rows(rows: Sequence[dict[str, Any]], by: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Mean, median and count of each metric per group of per-image ``rows`` (numbers or their CSV strings, as
    :class:`SegmentationMetric` and :func:`medseg.evaluation.score.score_entries` give them), plus an ``all`` row
    when grouping by something that has more than one group."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r.get(k, "") for k in by)].append(r)
    out = [_summarise(dict(zip(by, key, strict=True)), members) for key, members in sorted(groups.items())]
    if by and len(groups) > 1:
        out.append(_summarise(dict.fromkeys(by, "all"), list(rows)))
    return out


def group_means(rows: Sequence[Mapping[str, Any]], by: str | Sequence[str], metric: str = "dice", *,
                within: str | None = None, agg: Callable[[np.ndarray], Any] = np.mean) -> dict[Any, float]:
    """The one per-group aggregation of per-image score rows (per modality, per dataset, per method …).

    Args:
        rows: per-image rows (numbers or their CSV strings); rows whose ``metric`` is empty or NaN are left out.
        by: a column (keys are its values) or several (keys are tuples).
        metric: the column aggregated.
        within: aggregate each group over the means of its ``within`` sub-groups instead of over its images (e.g.
            ``by="modality", within="dataset"``: every dataset of a modality weighs the same, whatever its size);
            sub-groups without a value are left out (NaN-mean).
        agg: the aggregate over a group's values (``np.mean``; ``np.median`` for HD95).

    Returns:
        group key → the aggregate (NaN for a group without any value), keys sorted.
    """
    cols = (by,) if isinstance(by, str) else tuple(by)

    def key(r: Mapping[str, Any]) -> Any:
        return r[cols[0]] if isinstance(by, str) else tuple(r[c] for c in cols)

    values: dict[Any, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = r.get(metric, "")
        x = float(v) if v not in ("", None) else float("nan")
        values[key(r)][r[within] if within else None].append(x)
    if within:
        return {k: _nan_agg(np.mean, [_nan_agg(agg, xs) for xs in values[k].values()]) for k in sorted(values)}
    return {k: _nan_agg(agg, values[k][None]) for k in sorted(values)}


def _nan_agg(agg: Callable[[np.ndarray], Any], xs: Sequence[float]) -> float:
    """``agg`` over the values of ``xs`` that are not NaN (NaN if none)."""
    ok = np.asarray([x for x in xs if not np.isnan(x)], dtype=np.float64)
    return float(agg(ok)) if ok.size else float("nan")


def _summarise(head: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    out = {**head, "n": len(rows)}
    for k in METRIC_NAMES:
        vals = np.array([float(r[k]) for r in rows if k in r], dtype=np.float64)
        if vals.size:
            out[f"{k}_mean"] = float(np.mean(vals))
            out[f"{k}_median"] = float(np.median(vals))
    return out
