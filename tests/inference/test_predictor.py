"""Letterbox geometry, boxes from masks and the batched Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.geometry import (
    boxes_from_mask,
    letterbox_geometry,
    letterbox_image,
    letterbox_mask,
    unletterbox_logits,
)
from medseg.inference import Predictor
from medseg.models import build_model
from tests.conftest import random_blob_mask, tiny_model_config


def test_letterbox_geometry_and_normalisation() -> None:
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, 50:] = 200
    x, geo = letterbox_image(img, 64)
    assert geo.new_hw == (32, 64) and geo.scale == pytest.approx(0.64)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert x[:, :32].min() == 0.0 and x[:, :32].max() == 1.0 and (x[:, 32:] == 0).all()
    np.testing.assert_allclose(geo.prompt_free_box(), [0, 0, 63, 31])
    np.testing.assert_allclose(geo.box_to_canvas(np.array([10, 5, 60, 40])), [6, 3, 38, 25])  # CVPR24: truncated


def test_letterbox_rounds_half_up_like_the_cvpr24_script() -> None:
    # 1 · 10 / 4 = 2.5: the challenge script's int(x + 0.5) gives 3, Python's round() would give 2
    assert letterbox_geometry((4, 1), 10).new_hw == (10, 3)
    assert letterbox_geometry((300, 77), 256).new_hw == (256, int(77 * 256 / 300 + 0.5))


def test_mask_round_trip_through_letterbox(rng: np.random.Generator) -> None:
    m = random_blob_mask(rng, size=96)
    geo = letterbox_geometry(m.shape, 48)
    small = letterbox_mask(m, geo)
    logits = torch.from_numpy(np.where(small, 10.0, -10.0)).float()[None, None]
    back = unletterbox_logits(logits, geo)[0, 0].numpy() > 0
    assert back.shape == m.shape
    assert (back == m).mean() > 0.97


def test_boxes_from_mask_hand_case() -> None:
    m = np.zeros((20, 30), bool)
    m[2:6, 3:9] = True  # 24 px
    m[10:18, 20:25] = True  # 40 px
    m[0, 29] = True  # 1 px: below min_area
    np.testing.assert_array_equal(boxes_from_mask(m), [[3, 2, 8, 5], [20, 10, 24, 17]])
    np.testing.assert_array_equal(boxes_from_mask(m, per_component=False), [[3, 0, 29, 17]])
    assert boxes_from_mask(np.zeros((4, 4))).shape == (0, 4)
    jit = boxes_from_mask(m, shift=5, rng=np.random.default_rng(0))
    assert (jit[:, :2] <= [[3, 2], [20, 10]]).all() and (jit[:, 2:] >= [[8, 5], [24, 17]]).all()
    assert (jit >= 0).all() and (jit[:, 2] <= 29).all() and (jit[:, 3] <= 19).all()


@pytest.mark.parametrize("name", ["lite_medsam", "basic_unet"])
def test_predictor_returns_masks_at_original_size(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **tiny_model_config(name))
    pred = Predictor(model, img_size=64, batch_size=2, engine="eager")
    images = [np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
              for i, (h, w) in enumerate([(40, 70), (64, 64), (100, 30)])]
    boxes = [np.array([[5, 5, 30, 30]], np.float32), None, np.zeros((0, 4), np.float32)]
    out = pred.predict(images, boxes)
    assert [o.mask.shape for o in out] == [(40, 70), (64, 64), (100, 30)]
    assert all(o.mask.dtype == bool and 0 <= o.prob.min() <= o.prob.max() <= 1 for o in out)
    sets = pred.predict_prompt_sets(images, [boxes, None])
    assert len(sets) == 3 and all(len(s) == 2 for s in sets)
    np.testing.assert_array_equal(sets[0][0].prob, out[0].prob)
    fast = Predictor(model, img_size=64, batch_size=2, engine="optimized").predict(images, boxes)
    for a, b in zip(fast, out, strict=True):
        np.testing.assert_allclose(a.prob, b.prob, atol=1e-4)


def test_resize_image_chooses_the_filter_per_axis() -> None:
    from PIL import Image

    from medseg.data.geometry import resize_image

    img = np.random.default_rng(0).integers(0, 256, (40, 10, 3), dtype=np.uint8)
    out = resize_image(img, (20, 30))  # height shrinks (area), width grows (bilinear)
    tall = np.asarray(Image.fromarray(img).resize((10, 20), Image.Resampling.BOX))
    ref = np.asarray(Image.fromarray(tall).resize((30, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, ref)
    small = resize_image(img, (20, 5))  # both shrink: one area pass
    np.testing.assert_array_equal(small, np.asarray(Image.fromarray(img).resize((5, 20), Image.Resampling.BOX)))


def test_predictor_model_and_onnx_agree_on_a_non_square_image(tmp_path) -> None:
    """One prompt-free box for every path: Predictor, the model called directly, and ONNX Runtime."""
    import torch

    from medseg.data.geometry import prompt_free_boxes
    from medseg.export import OnnxPredictor, export_onnx

    torch.manual_seed(0)
    model = build_model("lite_medsam", **tiny_model_config("lite_medsam")).eval()
    img = np.random.default_rng(3).integers(0, 256, (37, 64, 3), dtype=np.uint8)
    prob = Predictor(model, img_size=64, engine="eager").predict([img])[0].prob
    x, geo = letterbox_image(img, 64)
    boxes = prompt_free_boxes([geo])
    with torch.inference_mode():
        logits = model(torch.from_numpy(x)[None], torch.from_numpy(boxes))
    direct = torch.sigmoid(unletterbox_logits(logits, geo))[0, 0].numpy()
    np.testing.assert_allclose(prob, direct, atol=1e-5)
    path = export_onnx(model, tmp_path / "m.onnx", img_size=64).path
    onnx_logits = OnnxPredictor(path)(x[None], boxes)
    onnx_prob = torch.sigmoid(unletterbox_logits(torch.from_numpy(onnx_logits), geo))[0, 0].numpy()
    np.testing.assert_allclose(prob, onnx_prob, atol=1e-4)
    with pytest.raises(Exception, match="boxes"):
        OnnxPredictor(path)(x[None])
