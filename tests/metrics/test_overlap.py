import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from monai.metrics import DiceMetric, MeanIoU

from medseg.metrics import confusion, dice, iou, precision, recall

masks = arrays(bool, st.tuples(st.integers(1, 16), st.integers(1, 16)))


def test_hand_computed_case():
    pred = np.array([[1, 1, 0], [0, 1, 0]], bool)
    gt = np.array([[1, 0, 0], [0, 1, 1]], bool)
    c = confusion(pred, gt)
    assert c == (2, 1, 1, 2)
    assert dice(pred, gt) == pytest.approx(4 / 6)
    assert iou(pred, gt) == pytest.approx(2 / 4)
    assert precision(pred, gt) == pytest.approx(2 / 3)
    assert recall(pred, gt) == pytest.approx(2 / 3)


@settings(max_examples=50, deadline=None)
@given(m=masks)
def test_self_overlap_is_one(m):
    assert dice(m, m) == 1.0 and iou(m, m) == 1.0


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_symmetry_and_dice_iou_relation(data):
    shape = data.draw(st.tuples(st.integers(1, 12), st.integers(1, 12)))
    a = data.draw(arrays(bool, shape))
    b = data.draw(arrays(bool, shape))
    assert dice(a, b) == dice(b, a)
    d, j = dice(a, b), iou(a, b)
    assert d == pytest.approx(2 * j / (1 + j))
    assert 0.0 <= j <= d <= 1.0


def test_empty_rules():
    e, f = np.zeros((4, 4), bool), np.eye(4, dtype=bool)
    assert (dice(e, e), iou(e, e), precision(e, e), recall(e, e)) == (1.0, 1.0, 1.0, 1.0)
    assert (dice(e, f), iou(e, f), precision(e, f), recall(e, f)) == (0.0, 0.0, 0.0, 0.0)
    assert (dice(f, e), iou(f, e), precision(f, e), recall(f, e)) == (0.0, 0.0, 0.0, 0.0)


def test_matches_monai(rng):
    from tests.conftest import random_blob_mask

    dm, im = DiceMetric(include_background=True, reduction="none"), MeanIoU(include_background=True, reduction="none")
    for _ in range(20):
        p, g = random_blob_mask(rng), random_blob_mask(rng)
        P, G = torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float()
        assert dice(p, g) == pytest.approx(dm(P, G).item(), abs=1e-6)
        assert iou(p, g) == pytest.approx(im(P, G).item(), abs=1e-6)


def test_shape_mismatch():
    with pytest.raises(ValueError, match="does not match"):
        dice(np.zeros((2, 2)), np.zeros((3, 2)))


def test_batched_torch_dice_iou_equal_numpy() -> None:
    import torch

    from medseg.metrics import dice_iou_torch

    rng = np.random.default_rng(5)
    preds = rng.random((6, 12, 12)) > 0.6
    gts = rng.random((6, 12, 12)) > 0.5
    preds[0] = gts[0] = False  # both empty
    preds[1] = False  # prediction empty
    d, j = dice_iou_torch(torch.from_numpy(preds), torch.from_numpy(gts))
    np.testing.assert_allclose(d.numpy(), [dice(p, g) for p, g in zip(preds, gts, strict=True)], rtol=1e-6)
    np.testing.assert_allclose(j.numpy(), [iou(p, g) for p, g in zip(preds, gts, strict=True)], rtol=1e-6)
