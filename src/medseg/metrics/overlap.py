"""Overlap metrics from the confusion counts of two binary masks: Dice, IoU, precision, recall.

Empty-mask rules (the same everywhere in medseg):

=============================  =====  =====  =========  ======
case                           Dice   IoU    precision  recall
=============================  =====  =====  =========  ======
both empty                     1      1      1          1
prediction empty, GT not       0      0      0          0
GT empty, prediction not       0      0      0          0
=============================  =====  =====  =========  ======
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Confusion(NamedTuple):
    """Pixel counts of a binary prediction against a binary ground truth."""

    tp: int
    fp: int
    fn: int
    tn: int


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} does not match ground-truth shape {g.shape}")
    return p.astype(bool, copy=False), g.astype(bool, copy=False)


def confusion(pred: np.ndarray, gt: np.ndarray) -> Confusion:
    """Confusion counts. Args: ``pred``, ``gt`` — same-shape arrays, non-zero = foreground."""
    p, g = _as_bool_pair(pred, gt)
    tp = int(np.count_nonzero(p & g))
    np_, ng = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    return Confusion(tp=tp, fp=np_ - tp, fn=ng - tp, tn=p.size - np_ - ng + tp)


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if both_empty:
        return 1.0
    return num / den if den else 0.0


def dice_from_confusion(c: Confusion) -> float:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, c.tp + c.fp + c.fn == 0)


def iou_from_confusion(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fp + c.fn, c.tp + c.fp + c.fn == 0)


def precision_from_confusion(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fp, c.tp + c.fp + c.fn == 0)


def recall_from_confusion(c: Confusion) -> float:
    return _ratio(c.tp, c.tp + c.fn, c.tp + c.fp + c.fn == 0)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient 2|P∩G| / (|P|+|G|). Shape: any, same for both; empty rules above."""
    return dice_from_confusion(confusion(pred, gt))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union |P∩G| / |P∪G| (Jaccard). Empty rules above."""
    return iou_from_confusion(confusion(pred, gt))


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P∩G| / |P|. Empty rules above."""
    return precision_from_confusion(confusion(pred, gt))


def recall(pred: np.ndarray, gt: np.ndarray) -> float:
    """|P∩G| / |G| (sensitivity). Empty rules above."""
    return recall_from_confusion(confusion(pred, gt))


def dice_iou_torch(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Dice and IoU on tensors (any device), with the empty rules above.

    Shape:
        pred, gt: (B, ...) bool or {0, 1} → dice (B,), iou (B,) float32.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match ground-truth shape {tuple(gt.shape)}")
    p, g = pred.bool().flatten(1), gt.bool().flatten(1)
    tp = (p & g).sum(1).float()
    wrong = (p ^ g).sum(1).float()  # fp + fn
    empty = (tp + wrong) == 0
    one = torch.ones_like(tp)
    dice = torch.where(empty, one, 2 * tp / (2 * tp + wrong).clamp_min(1))
    iou = torch.where(empty, one, tp / (tp + wrong).clamp_min(1))
    return dice, iou
