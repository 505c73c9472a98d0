"""Sliding-window inference at native resolution and flip TTA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.inference import Predictor
from medseg.inference.sliding import flip_tta, native_tensor, sliding_window_logits
from medseg.models import build_model
from medseg.models.adapters import adapter_for
from tests.conftest import tiny_model_config


def _unet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("basic_unet", **tiny_model_config("basic_unet")).eval()


def test_tiling_restores_the_exact_size_and_pads_small_images() -> None:
    fn = adapter_for(_unet()).window_logits()
    for h, w in ((100, 70), (37, 129), (20, 25)):  # larger than, straddling, smaller than a tile
        x = torch.rand(1, 3, h, w)
        with torch.inference_mode():
            out = sliding_window_logits(fn, x, tile=64, overlap=0.25, batch_size=4)
        assert out.shape == (1, 1, h, w) and torch.isfinite(out).all()


def test_one_tile_equals_a_full_image_forward() -> None:
    model = _unet()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        tiled = sliding_window_logits(adapter_for(model).window_logits(), x, tile=64, overlap=0.5)
        full = model(x)
    torch.testing.assert_close(tiled, full, rtol=1e-5, atol=1e-5)


def test_tta_of_a_flip_symmetric_input_equals_no_tta() -> None:
    conv = nn.Conv2d(3, 1, 3, padding=1, bias=False)
    with torch.no_grad():  # a kernel symmetric under both flips: the model commutes with flips
        k = torch.rand(1, 3, 3, 3)
        conv.weight.copy_((k + k.flip(-1) + k.flip(-2) + k.flip(-1, -2)) / 4)
    half = torch.rand(1, 3, 8, 8)
    top = torch.cat([half, half.flip(-1)], dim=-1)
    x = torch.cat([top, top.flip(-2)], dim=-2)  # symmetric under both flips
    with torch.inference_mode():
        torch.testing.assert_close(flip_tta(conv)(x), conv(x), rtol=1e-6, atol=1e-6)


def test_predictor_tiles_and_tta_for_unets_and_sam() -> None:
    img = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    unet = _unet()
    for tta in (False, True):
        p = Predictor(unet, tile=64, tta=tta, batch_size=4).predict([img])[0]
        assert p.mask.shape == (90, 70) and p.prob.dtype == np.float32
    full = Predictor(unet, img_size=64, tta=True).predict([img])[0]  # TTA on the letterbox path
    assert full.prob.shape == (90, 70)
    torch.manual_seed(0)
    sam = build_model("lite_medsam", **tiny_model_config("lite_medsam")).eval()
    assert Predictor(sam, tile=64).predict([img])[0].mask.shape == (90, 70)
    with pytest.raises(ValueError, match="tile=64"):
        Predictor(sam, tile=32)
    with pytest.raises(ValueError, match="not tiled"):
        Predictor(sam, tile=64).predict([img], [np.array([[0, 0, 10, 10]], np.float32)])
    x = native_tensor(img)
    assert x.shape == (1, 3, 90, 70) and float(x.min()) == 0.0 and float(x.max()) == 1.0


class _Pointwise(nn.Module):
    """Logits of each pixel from that pixel alone: segmenting a resized copy and resizing back changes nothing
    where the image is constant."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_multiscale_inference_averages_the_logits_of_resized_copies() -> None:
    from medseg.data.geometry import resize_image

    torch.manual_seed(0)
    model = _Pointwise().eval()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    single = Predictor(model, img_size=32, tile=32, engine="eager")
    multi = Predictor(model, img_size=32, tile=32, engine="eager", scales=(1.0, 0.5))
    assert Predictor(model, img_size=32, tile=32, engine="eager", scales=(1.0,)).scales == single.scales == (1.0,)
    fn = adapter_for(model).window_logits(32)
    with torch.no_grad():
        small = sliding_window_logits(fn, native_tensor(resize_image(img, (20, 26))), tile=32, overlap=0.25)
        back = torch.nn.functional.interpolate(small, size=(40, 52), mode="bilinear", align_corners=False)
        full = sliding_window_logits(fn, native_tensor(img), tile=32, overlap=0.25)
    want = torch.sigmoid((full + back)[0, 0] / 2).numpy()
    np.testing.assert_allclose(multi.predict([img])[0].prob, want, atol=1e-5)
    flat = np.full((40, 52, 3), 90, np.uint8)
    flat[:, :26] = 200  # two constant halves: only the seam may differ between scales
    a, b = single.predict([flat])[0].prob, multi.predict([flat])[0].prob
    np.testing.assert_allclose(a[:, :20], b[:, :20], atol=1e-6)
    np.testing.assert_allclose(a[:, 32:], b[:, 32:], atol=1e-6)


def test_multiscale_needs_tiles_and_sane_factors() -> None:
    model = _Pointwise().eval()
    with pytest.raises(ValueError, match="sliding windows"):
        Predictor(model, img_size=32, scales=(1.0, 0.8))
    for bad in ((), (0.0,), (1.0, 9.0)):
        with pytest.raises(ValueError, match="scales"):
            Predictor(model, img_size=32, tile=32, scales=bad)


def test_a_model_folder_says_whether_it_is_fed_with_flip_tta(tmp_path) -> None:
    """``model.json``'s ``tta`` turns flip TTA on in :meth:`Predictor.for_model` (an explicit ``tta`` wins): the
    logits of the four flips, each segmented and flipped back, averaged."""
    from medseg.models.io import copy_model_folder, load_model, save_model_folder

    plain = save_model_folder(_unet(), tmp_path / "plain", name="basic_unet", img_size=32,
                              options=tiny_model_config("basic_unet"), extra={"tile": 32})
    a, b = load_model(plain), load_model(copy_model_folder(plain, tmp_path / "tta", {"tta": True}))
    assert not a.tta and b.tta
    assert not Predictor.for_model(a).tta and Predictor.for_model(b).tta
    assert not Predictor.for_model(b, tta=False).tta
    img = np.random.default_rng(2).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    one = Predictor.for_model(a, engine="eager")
    probs = [one.predict([np.ascontiguousarray(img[::sy, ::sx])])[0].prob[::sy, ::sx].astype(np.float64)
             for sy in (1, -1) for sx in (1, -1)]
    logits = np.mean([np.log(p / (1 - p)) for p in probs], axis=0)
    got = Predictor.for_model(b, engine="eager").predict([img])[0].prob
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-logits)), atol=1e-4)
    assert float(np.abs(got - probs[0]).max()) > 1e-4  # a U-Net is not flip-equivariant: TTA changes something


def test_letterbox_tta_flips_boxes_with_the_image() -> None:
    torch.manual_seed(0)
    sam = build_model("lite_medsam", **tiny_model_config("lite_medsam")).eval()
    img = np.random.default_rng(1).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    box = [np.array([[5, 4, 30, 20]], np.float32)]
    a = Predictor(sam, img_size=64, tta=True).predict([img], box)[0].prob
    # the same prediction for the mirrored image and mirrored box, mirrored back
    mirrored = Predictor(sam, img_size=64, tta=True).predict([img[:, ::-1].copy()],
                                                            [np.array([[33, 4, 58, 20]], np.float32)])[0].prob
    np.testing.assert_allclose(a, mirrored[:, ::-1], atol=2e-3)


def test_predict_cli_tiles_and_python_m_medseg(tmp_path) -> None:
    import subprocess
    import sys

    from medseg.cli.main import main
    from medseg.data import generate_dataset

    data = generate_dataset(tmp_path / "d", per_modality=2, size=48, modalities=("xray",))
    assert main(["train", f"data.root={data}", f"out_dir={tmp_path / 'run'}", "model.name=basic_unet",
                 "model.options={features: [4, 4, 8, 8, 16, 4]}", "data.img_size=32", "trainer.max_steps=1",
                 "trainer.accelerator=cpu", "trainer.progress_bar=false"]) == 0
    out = tmp_path / "p"
    assert main(["predict", str(tmp_path / "run" / "model"), str(data), "-o", str(out), "--tile", "32", "--tta"]) == 0
    assert main(["predict", str(tmp_path / "run" / "model"), str(data), "-o", str(tmp_path / "q"), "--no-tta"]) == 0
    masks = [p for p in out.rglob("*.png") if not p.stem.endswith("_overlay")]
    assert len(masks) == 2
    proc = subprocess.run([sys.executable, "-m", "medseg", "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "medseg" in proc.stdout
