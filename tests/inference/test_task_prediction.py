"""Prediction with a task model (ESP-MedSAM): no prompt and no modality needed, each prediction names the task it
was segmented as; a task can be forced; tiles and flips keep the image's task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.inference import Predictor
from medseg.models import build_model
from tests.conftest import tiny_model_config


def _model():
    torch.manual_seed(0)
    opts = {**tiny_model_config("esp_medsam"), "tasks": ["a", "b", "c"]}
    model = build_model("esp_medsam", **opts)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, size, dtype=np.uint8) for size in ((50, 70, 3), (64, 64, 3), (90, 40, 3))]


def test_each_prediction_names_the_task_its_classifier_chose() -> None:
    model = _model()
    preds = Predictor(model, img_size=64, engine="eager").predict(_images())
    assert all(p.task in model.tasks for p in preds)
    assert [p.mask.shape for p in preds] == [(50, 70), (64, 64), (90, 40)]
    for p in preds:  # forcing the chosen task changes nothing
        forced = Predictor(model, img_size=64, engine="eager", task=p.task).predict(_images())
        same = next(f for f, q in zip(forced, preds, strict=True) if q is p)
        np.testing.assert_allclose(same.prob, p.prob, atol=1e-5)


def test_a_forced_task_is_used_for_every_image() -> None:
    model = _model()
    preds = Predictor(model, img_size=64, engine="eager", task="c").predict(_images())
    assert [p.task for p in preds] == ["c", "c", "c"]
    with pytest.raises(ValueError, match="unknown task 'd'"):
        Predictor(model, img_size=64, task="d")
    with pytest.raises(ValueError, match="not a task model"):
        Predictor(build_model("basic_unet", **tiny_model_config("basic_unet")), img_size=64, task="a")


def test_tiles_and_flips_keep_the_images_task() -> None:
    model = _model()
    img = np.random.default_rng(1).integers(0, 255, (100, 140, 3), dtype=np.uint8)
    plain = Predictor(model, img_size=64, engine="eager").predict([img])[0]
    tiled = Predictor(model, img_size=64, engine="eager", tile=64, tta=True).predict([img])[0]
    flipped = Predictor(model, img_size=64, engine="eager", tta=True).predict([img])[0]
    assert plain.task == tiled.task == flipped.task and tiled.mask.shape == (100, 140)
    assert Predictor(model, img_size=64, engine="optimized").predict([img])[0].task == plain.task


def test_task_models_refuse_the_onnx_engines() -> None:
    with pytest.raises(ValueError, match="PyTorch engines"):
        Predictor(_model(), img_size=64, engine="onnx")
