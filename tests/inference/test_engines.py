"""Every inference engine gives the eager model's masks (ONNX exported once and cached; int8 approximately)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.engines import ENGINES, prepare_engine
from medseg.models import build_model
from tests.conftest import tiny_model_config

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


@pytest.mark.parametrize("name", ["lite_medsam", "basic_unet"])
def test_engines_agree_with_eager(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(name, **tiny_model_config(name)).eval()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(40, 70), (64, 64)]]
    boxes = [np.array([[5, 5, 30, 30], [0, 0, 20, 20]], np.float32), None]
    ref = Predictor(model, img_size=64, engine="eager").predict(images, boxes)
    for engine in ("optimized", "onnx", "onnx-int8"):
        got = Predictor(model, img_size=64, engine=engine).predict(images, boxes)
        for a, b in zip(got, ref, strict=True):
            assert a.prob.shape == b.prob.shape
            tol = 0.1 if engine == "onnx-int8" else 1e-4
            np.testing.assert_allclose(a.prob, b.prob, atol=tol, err_msg=engine)
    files = {p.name.split("-", 3)[3] for p in (tmp_path / "medseg" / "onnx").glob("*.onnx")}  # exported once each
    graphs = {"encoder", "decoder"} if name == "lite_medsam" else {"net64x64"}
    assert {f.removesuffix(".onnx").split("-")[0] for f in files} == graphs
    assert {f for f in files if f.endswith("-int8.onnx")} == {f"{g}-int8.onnx" for g in graphs}


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(MedsegError, match="unknown engine"):
        prepare_engine(torch.nn.Identity(), "tensorrt")
    assert "optimized" in ENGINES


def test_auto_uses_onnx_for_sam_on_the_cpu_and_optimized_otherwise() -> None:
    from medseg.inference.engines import OnnxEngine

    sam = build_model("lite_medsam", **tiny_model_config("lite_medsam")).eval()
    unet = build_model("basic_unet", **tiny_model_config("basic_unet")).eval()
    assert isinstance(prepare_engine(sam, "auto", img_size=64), OnnxEngine)
    assert not isinstance(prepare_engine(unet, "auto", img_size=64), OnnxEngine)


def test_onnx_unet_tiles_at_any_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    unet = build_model("basic_unet", **tiny_model_config("basic_unet")).eval()
    img = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    ref = Predictor(unet, img_size=64, tile=32, engine="eager").predict([img])[0].prob
    got = Predictor(unet, img_size=64, tile=32, engine="onnx").predict([img])[0].prob
    np.testing.assert_allclose(got, ref, atol=1e-4)
