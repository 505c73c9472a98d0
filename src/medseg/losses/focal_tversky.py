"""Focal-Tversky loss (Abraham & Khan 2018) with named false-positive / false-negative weights."""

from __future__ import annotations

import torch
from torch import nn


class FocalTverskyLoss(nn.Module):
    """``(1 − TI) ** exponent`` with ``TI = (TP + s) / (TP + fn_weight·FN + fp_weight·FP + s)``.

    The two published conventions swap α/β (Abraham & Khan: α on FN; smp / MONAI ``TverskyLoss``: α on FP), so the
    weights are named. Defaults are Abraham & Khan's: FN 0.7, FP 0.3, exponent 1/γ = 0.75 (γ = 4/3).
    With fp_weight = fn_weight = 0.5 and exponent 1 this is the soft Dice loss.

    Args:
        fp_weight, fn_weight: penalties of false positives and false negatives.
        exponent: focal exponent applied to (1 − TI); < 1 focuses on hard (low-TI) images.
        smooth: additive smoothing in numerator and denominator.
        per_image: Tversky index per image (then averaged) rather than over the whole batch.
        sigmoid: apply a sigmoid to the input (pass logits); otherwise the input holds probabilities.

    Shape:
        input (B, 1, H, W) logits (or probabilities), target (B, 1, H, W) in {0, 1} → scalar.
    """

    def __init__(self, *, fp_weight: float = 0.3, fn_weight: float = 0.7, exponent: float = 0.75,
                 smooth: float = 1.0, per_image: bool = True, sigmoid: bool = True) -> None:
        super().__init__()
        if fp_weight < 0 or fn_weight < 0 or exponent <= 0:
            raise ValueError("fp_weight and fn_weight must be ≥ 0 and exponent > 0")
        self.fp_weight, self.fn_weight, self.exponent = fp_weight, fn_weight, exponent
        self.smooth, self.per_image, self.sigmoid = smooth, per_image, sigmoid

    def tversky_index(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image (B,) or batch (1,) Tversky index."""
        p = torch.sigmoid(input) if self.sigmoid else input
        t = target.to(p.dtype)
        dims = tuple(range(1, p.ndim)) if self.per_image else tuple(range(p.ndim))
        tp = (p * t).sum(dims)
        fp = (p * (1 - t)).sum(dims)
        fn = ((1 - p) * t).sum(dims)
        return (tp + self.smooth) / (tp + self.fn_weight * fn + self.fp_weight * fp + self.smooth)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti = self.tversky_index(input, target)
        return torch.clamp(1 - ti, min=0).pow(self.exponent).mean()
