"""Losses against MONAI and hand-computed cases."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.losses import DiceLoss, TverskyLoss

from medseg.losses import CompositeLoss, FocalTverskyLoss, IoUPredictionMSE, mask_iou


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 16, 16, generator=g), (torch.rand(3, 1, 16, 16, generator=g) > 0.6).float()


def test_focal_tversky_equals_monai_tversky_at_exponent_one() -> None:
    logits, target = _pair()
    ours = FocalTverskyLoss(fp_weight=0.3, fn_weight=0.7, exponent=1.0, smooth=1e-5)
    # MONAI: alpha weights false positives, beta false negatives
    ref = TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, smooth_nr=1e-5, smooth_dr=1e-5)
    torch.testing.assert_close(ours(logits, target), ref(logits, target), rtol=1e-5, atol=1e-6)


def test_focal_tversky_half_weights_is_soft_dice() -> None:
    logits, target = _pair(1)
    ours = FocalTverskyLoss(fp_weight=0.5, fn_weight=0.5, exponent=1.0, smooth=1e-5)
    ref = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    torch.testing.assert_close(ours(logits, target), ref(logits, target), rtol=1e-5, atol=1e-6)


def test_focal_tversky_hand_case_and_weight_names() -> None:
    p = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])  # probabilities
    t = torch.tensor([[[[1.0, 0.0, 1.0, 1.0]]]])  # TP 1, FP 1, FN 2
    loss = FocalTverskyLoss(fp_weight=0.3, fn_weight=0.7, exponent=0.75, smooth=0.0, sigmoid=False)
    ti = 1 / (1 + 0.7 * 2 + 0.3 * 1)
    assert loss(p, t).item() == pytest.approx((1 - ti) ** 0.75, rel=1e-6)
    # penalising false negatives more must raise the loss of this under-segmentation
    fn_heavy = FocalTverskyLoss(fp_weight=0.1, fn_weight=0.9, exponent=1.0, smooth=0.0, sigmoid=False)
    fp_heavy = FocalTverskyLoss(fp_weight=0.9, fn_weight=0.1, exponent=1.0, smooth=0.0, sigmoid=False)
    assert fn_heavy(p, t) > fp_heavy(p, t)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 3.0))
def test_focal_tversky_is_bounded_and_zero_for_perfect(seed: int, exponent: float) -> None:
    logits, target = _pair(seed)
    loss = FocalTverskyLoss(exponent=exponent)
    v = loss(logits, target).item()
    assert 0.0 <= v <= 1.0
    perfect = (target * 40 - 20)  # logits saturating to the target
    assert loss(perfect, target).item() < 1e-3


def test_iou_mse_hand_case() -> None:
    logits = torch.tensor([[[[5.0, 5.0, -5.0, -5.0]]], [[[-5.0, -5.0, -5.0, -5.0]]]])
    target = torch.tensor([[[[1.0, 0.0, 0.0, 0.0]]], [[[0.0, 0.0, 0.0, 0.0]]]])
    torch.testing.assert_close(mask_iou(logits, target), torch.tensor([0.5, 1.0]))
    pred_iou = torch.tensor([[0.5], [0.0]])
    assert IoUPredictionMSE()(pred_iou, logits, target).item() == pytest.approx((0.0 + 1.0) / 2)


def test_composite_sums_weighted_terms_and_skips_iou_without_head() -> None:
    logits, target = _pair(2)
    comp = CompositeLoss({"dice": 1.0, "bce": 2.0, "iou_mse": 1.0})
    total, parts = comp(logits, target)
    assert set(parts) == {"dice", "bce"}
    torch.testing.assert_close(total, parts["dice"] + 2 * parts["bce"])
    total2, parts2 = comp(logits, target, torch.full((3, 1), 0.5))
    assert "iou_mse" in parts2 and total2 > total
    with pytest.raises(ValueError, match="unknown loss"):
        CompositeLoss({"hinge": 1.0})
