"""IoU-prediction loss of SAM-family models (the CMMC / LiteMedSAM "IoU loss")."""

from __future__ import annotations

import torch
from torch import nn

from medseg.metrics.overlap import dice_iou_torch


def mask_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """IoU of (logits > threshold) with ``target`` per image. (B, 1, H, W) → (B,), an IoU of 1 when both are empty."""
    return dice_iou_torch(logits > threshold, target > 0.5)[1]


class IoUPredictionMSE(nn.Module):
    """MSE between the model's predicted IoU (B, 1) and the actual IoU of its binarised mask (no gradient through
    the target). As in CMMC's ``pretrain.py`` and LiteMedSAM's ``train_one_gpu.py``."""

    def forward(self, iou_pred: torch.Tensor, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            actual = mask_iou(logits, target)
        return torch.mean((iou_pred.reshape(-1).float() - actual) ** 2)
