"""Weighted sums of segmentation losses, configured by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.losses import DiceLoss, FocalLoss
from torch import nn

from medseg.losses.auxiliary import PatchPromptBCE, TaskCrossEntropy
from medseg.losses.focal_tversky import FocalTverskyLoss
from medseg.losses.iou_mse import IoUPredictionMSE

LOSS_NAMES = ("bce", "dice", "focal", "focal_tversky", "iou_mse", "patch_bce", "task_ce")
#: terms computed from ``aux`` outputs (name → the aux keys they read), skipped when the model gives none
AUX_INPUTS = {"patch_bce": ("patch_logits",), "task_ce": ("task_logits", "task")}


def make_loss(name: str, **options: Any) -> nn.Module:
    """One loss term by name.

    ``bce``: ``BCEWithLogitsLoss``; ``dice``: MONAI ``DiceLoss(sigmoid=True, squared_pred=True)`` (CMMC);
    ``focal``: MONAI ``FocalLoss(gamma=2)`` on logits; ``focal_tversky``: :class:`FocalTverskyLoss`;
    ``iou_mse``: :class:`IoUPredictionMSE` (SAM-family models only); ``patch_bce`` and ``task_ce``: ESP-MedSAM's
    SPPG and task-classifier terms (:mod:`medseg.losses.auxiliary`). ``options`` go to the constructor.
    """
    if name == "bce":
        return nn.BCEWithLogitsLoss(**options)
    if name == "dice":
        return DiceLoss(**{"sigmoid": True, "squared_pred": True, "smooth_nr": 1e-5, "smooth_dr": 1e-5, **options})
    if name == "focal":
        return FocalLoss(**{"gamma": 2.0, "use_softmax": False, **options})
    if name == "focal_tversky":
        return FocalTverskyLoss(**options)
    if name == "iou_mse":
        return IoUPredictionMSE()
    if name == "patch_bce":
        return PatchPromptBCE()
    if name == "task_ce":
        return TaskCrossEntropy()
    raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSS_NAMES)}")


class CompositeLoss(nn.Module):
    """Σ weight·term. ``iou_mse`` is skipped (and reported absent) when the model gives no IoU prediction, the
    ``aux`` terms (``patch_bce``, ``task_ce``) when the model gives no such output.

    Args:
        weights: loss name → weight, e.g. ``{"dice": 1, "bce": 1, "iou_mse": 1}`` (CMMC / LiteMedSAM).
        options: loss name → constructor options.

    Shape:
        logits (B, 1, H, W), target (B, 1, H, W) in {0, 1}, iou_pred (B, 1) or None, aux: ``patch_logits``
        (B, 1, G, G), ``task_logits`` (B, T), ``task`` (B,) int64 (any may be absent or None)
        → (total scalar, {name: scalar}).
    """

    def __init__(self, weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        if not weights:
            raise ValueError("at least one loss term is needed")
        options = options or {}
        self.weights = dict(weights)
        self.terms = nn.ModuleDict({n: make_loss(n, **dict(options.get(n, {}))) for n in self.weights})

    def forward(self, logits: torch.Tensor, target: torch.Tensor, iou_pred: torch.Tensor | None = None,
                aux: Mapping[str, torch.Tensor | None] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = target.to(logits.dtype)
        parts: dict[str, torch.Tensor] = {}
        aux = aux or {}
        for name, term in self.terms.items():
            if name in AUX_INPUTS:
                inputs = [aux.get(k) for k in AUX_INPUTS[name]]
                if any(v is None for v in inputs):
                    continue
                parts[name] = term(inputs[0], target) if name == "patch_bce" else term(*inputs)
            elif name == "iou_mse":
                if iou_pred is None:
                    continue
                parts[name] = term(iou_pred, logits, target)
            else:
                parts[name] = term(logits, target)
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, parts
