"""The universal model: its folder pins every part, each task runs its engine, boxes get LiteMedSAM's mask, and the
predictor says how sure its classifier was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.geometry import letterbox_image, unletterbox_logits
from medseg.errors import InvalidInputError, MedsegError
from medseg.inference import Predictor
from medseg.inference.universal import UniversalPredictor
from medseg.models import build_model
from medseg.models.io import load_model, save_model_folder
from medseg.models.universal import replace_parts, save_universal
from tests.conftest import tiny_model_config
from tests.training.test_embedding_data import LITE, tiny_lite_medsam_state

HEAD = {k: v for k, v in tiny_model_config("prompt_free_head").items() if k != "tasks"}
UNET = {k: v for k, v in tiny_model_config("resnet_unet").items()}


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    return make_tiny_universal(tmp_path)


def make_tiny_universal(tmp_path: Path, fast: bool = False) -> Path:
    """A test-scale ``universal`` model folder: a random head (lungs → head, vessels → a random U-Net specialist)
    on the tiny LiteMedSAM of :func:`tiny_lite_medsam_state` (patch ``medseg.weights.fetch_weights`` with it);
    ``fast``: with a ``--fast`` mode (the same head as ``fast_head``, the tiny encoder at 32² input)."""
    torch.manual_seed(1)
    head = build_model("prompt_free_head", tasks=["lungs", "vessels"], **HEAD)
    head_dir = save_model_folder(head, tmp_path / "head", name="prompt_free_head",
                                 options={"tasks": ["lungs", "vessels"], **HEAD}, img_size=64,
                                 extra={"encoder": {"name": "lite_medsam", "options": {"pretrained": True, **LITE}}})
    unet = build_model("resnet_unet", **UNET)
    spec_dir = save_model_folder(unet, tmp_path / "spec", name="resnet_unet", options=UNET, img_size=32,
                                 extra={"tile": 32, "overlap": 0.25})
    fast_parts = {"fast_head": head_dir, "fast_encoder": {"name": "lite_medsam", "options": {
        "pretrained": True, **LITE, "encoder_input_size": 32}}} if fast else {}
    return save_universal(tmp_path / "universal", head=head_dir, specialists={"vessels": spec_dir},
                          engines={"lungs": "head", "vessels": "specialist"}, extra={"min_confidence": 0.5},
                          **fast_parts)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (40, 56, 3), dtype=np.uint8), rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)]


def test_each_task_runs_its_engine(folder: Path) -> None:
    loaded = load_model(folder)
    assert loaded.name == "universal" and loaded.model.tasks == ["lungs", "vessels"]
    images = _images()
    for task, engine in (("lungs", "head"), ("vessels", "specialist")):
        preds = UniversalPredictor(loaded.model, task=task, engine="eager").predict(images)
        assert [(p.task, p.engine) for p in preds] == [(task, engine)] * 2
        for img, p in zip(images, preds, strict=True):
            assert p.mask.shape == img.shape[:2] and 0.0 <= p.task_probability <= 1.0
            if engine == "head":  # the head on LiteMedSAM's embedding of the letterboxed image
                x, geo = letterbox_image(img, 64)
                with torch.inference_mode():
                    emb = loaded.model.sam.image_encoder(torch.from_numpy(x)[None])
                    logits = loaded.model.head(emb, torch.tensor([0]))
                ref = unletterbox_logits(logits, geo)[0, 0].sigmoid().numpy()
            else:  # the specialist by sliding windows at native resolution, as its own predictor runs it
                ref = Predictor.for_model(load_model(folder / "specialists" / "vessels")).predict([img])[0].prob
            np.testing.assert_allclose(p.prob, ref, atol=1e-4)
    auto = UniversalPredictor(loaded.model, min_confidence=1.0).predict(images)
    assert all(p.task in ("lungs", "vessels") and not p.confident for p in auto)
    assert all(p.confident for p in UniversalPredictor(loaded.model, min_confidence=0.0).predict(images))


def test_one_line_from_a_folder(folder: Path) -> None:
    pred = UniversalPredictor.from_folder(str(folder))
    assert pred.min_confidence == 0.5 and pred.predict(_images()[:1])[0].task in ("lungs", "vessels")
    with pytest.raises(ValueError, match="not a universal one"):
        UniversalPredictor.from_folder(str(folder / "head"))


def test_boxes_get_litemedsams_box_prompted_mask(folder: Path) -> None:
    loaded = load_model(folder)
    images = _images()
    boxes = [np.array([[5, 5, 30, 25]], np.float32), None]
    preds = UniversalPredictor(loaded.model, engine="eager").predict(images, boxes)
    assert preds[0].engine == "lite_medsam_box" and preds[1].engine in ("head", "specialist")
    ref = Predictor(loaded.model.sam, img_size=64, engine="eager").predict(images[:1], boxes[:1])[0]
    np.testing.assert_allclose(preds[0].prob, ref.prob, atol=1e-5)


def test_unknown_task_lists_the_known_ones(folder: Path) -> None:
    with pytest.raises(ValueError, match="lungs, vessels"):
        UniversalPredictor(load_model(folder).model, task="liver")


def test_a_swapped_or_corrupt_part_is_refused(folder: Path, tmp_path: Path) -> None:
    """Another part's weights, a part's feeding edited (``model.json`` ``tta``) and corrupt weights: each refused,
    naming the file."""
    part = folder / "specialists" / "vessels" / "model.json"
    original = part.read_text()
    part.write_text(json.dumps({**json.loads(original), "tta": True}, indent=2))
    with pytest.raises(InvalidInputError, match="how it is fed"):
        load_model(folder)
    part.write_text(original)
    load_model(folder)
    torch.manual_seed(5)
    other = save_model_folder(build_model("resnet_unet", **UNET), tmp_path / "other", name="resnet_unet",
                              options=UNET, img_size=32, extra={"tile": 32})
    for name in ("model.safetensors", "model.json"):
        (folder / "specialists" / "vessels" / name).write_bytes((other / name).read_bytes())
    with pytest.raises(InvalidInputError, match="not the ones"):
        load_model(folder)
    weights = folder / "head" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"12345678")
    with pytest.raises(InvalidInputError, match="does not match"):
        load_model(folder)


def test_replace_parts_swaps_one_part_and_keeps_the_rest(folder: Path, tmp_path: Path) -> None:
    """A retrained specialist goes in as the folder pins it; replacing a part by itself rewrites the same folder."""
    same = replace_parts(folder, tmp_path / "same", {"specialists/vessels": folder / "specialists" / "vessels"})
    assert (same / "model.json").read_bytes() == (folder / "model.json").read_bytes()
    torch.manual_seed(5)
    other = save_model_folder(build_model("resnet_unet", **UNET), tmp_path / "other", name="resnet_unet",
                              options=UNET, img_size=32, extra={"tile": 32})
    swapped = replace_parts(folder, tmp_path / "swapped", {"specialists/vessels": other})
    before, after = json.loads((folder / "model.json").read_text()), json.loads((swapped / "model.json").read_text())
    for pin in ("parts", "part_meta"):  # the swapped part's weights and model.json pinned anew, the head's kept
        assert after[pin]["head"] == before[pin]["head"]
        assert after[pin]["specialists/vessels"] != before[pin]["specialists/vessels"]
    rest = {"parts", "part_meta"}
    assert {k: v for k, v in after.items() if k not in rest} == {k: v for k, v in before.items() if k not in rest}
    loaded = load_model(swapped).model  # hash-checked; the new specialist's weights
    want = load_model(other).model.state_dict()
    got = loaded.specialists["vessels"].state_dict()
    assert all(torch.equal(got[k], want[k].half().float()) for k in want if want[k].is_floating_point())
    with pytest.raises(InvalidInputError, match="no part specialists/lungs"):
        replace_parts(folder, tmp_path / "bad", {"specialists/lungs": other})


def test_tiling_is_refused_and_tta_switches_the_specialists_flips(folder: Path, tmp_path: Path, capsys) -> None:
    """Each engine's own tiles and scales come from its ``model.json``: ``--tile`` says so in one line and writes
    nothing. ``--tta`` / ``--no-tta`` turn every specialist's flip TTA on or off (default: as its ``model.json``
    says); the head is never flipped."""
    from PIL import Image

    from medseg.cli.main import main

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(inputs / "a.png")
    assert main(["predict", str(folder), str(inputs), "-o", str(tmp_path / "out"), "--tile", "32"]) == 2
    assert "--tile do not apply" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    for flag in ("--tta", "--no-tta"):
        assert main(["predict", str(folder), str(inputs), "-o", str(tmp_path / flag), flag, "--task", "vessels"]) == 0
    model = load_model(folder).model
    assert not UniversalPredictor(model)._specialists["vessels"].tta
    assert UniversalPredictor(model, specialist_tta=True)._specialists["vessels"].tta
    model.specialist_options["vessels"]["tta"] = True  # a folder whose specialist asks for flips
    assert UniversalPredictor(model)._specialists["vessels"].tta
    assert not UniversalPredictor(model, specialist_tta=False)._specialists["vessels"].tta


def test_engines_must_cover_every_task(folder: Path) -> None:
    meta = json.loads((folder / "model.json").read_text())
    meta["engines"] = {"lungs": "head"}
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="without an engine"):
        load_model(folder)


def test_unshipped_model_says_how_to_get_one(monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.SHIPPED_MODELS", {})
    with pytest.raises(MedsegError, match="medseg experiment universal"):
        load_model("universal")


def test_grey_colour_and_corrupt_inputs_in_one_folder(folder: Path, tmp_path: Path, capsys) -> None:
    """A grey image for a colour task, a colour image, a 16-bit grey one, an RGBA one and a corrupt file in one
    folder: with ``--on-error skip`` every good image is segmented at its own size, the corrupt one is listed in one
    line, and the exit code says something was skipped; ``stop`` halts on it, naming the file."""
    from PIL import Image

    from medseg.cli.main import main

    rng = np.random.default_rng(3)
    inputs = tmp_path / "mixed"
    inputs.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 52), dtype=np.uint8)).save(inputs / "grey.png")
    Image.fromarray(rng.integers(0, 255, (44, 36, 3), dtype=np.uint8)).save(inputs / "colour.png")
    Image.fromarray(rng.integers(0, 65535, (30, 34), dtype=np.uint16)).save(inputs / "deep.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)).save(inputs / "rgba.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "pred"
    assert main(["predict", str(folder), str(inputs), "-o", str(out), "--on-error", "skip"]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err
    for name, shape in (("grey", (40, 52)), ("colour", (44, 36)), ("deep", (30, 34)), ("rgba", (32, 32))):
        mask = np.asarray(Image.open(out / f"{name}.png"))
        assert mask.shape == shape, name
    assert main(["predict", str(folder), str(inputs), "-o", str(tmp_path / "stop")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_the_fast_mode_runs_the_fast_head_everywhere_or_keeps_the_specialists(tmp_path: Path, monkeypatch) -> None:
    from medseg.models.resized_encoder import ResizedEncoder

    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    model = load_model(make_tiny_universal(tmp_path, fast=True)).model
    assert isinstance(model.student.image_encoder, ResizedEncoder) and model.fast_head is not None
    # the fast encoder is LiteMedSAM's own at another side: its weights are sam's tensors (one copy in memory), and
    # it computes what the same encoder built from the weights on its own computes
    from medseg.models import build_model

    ptrs = {p.data_ptr() for p in model.sam.parameters()}
    assert all(p.data_ptr() in ptrs for p in model.student.parameters())
    alone = build_model("lite_medsam", pretrained=True, img_size=64, encoder_input_size=32, **LITE).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model.student.image_encoder(x), alone.image_encoder(x))
    images = _images()
    for keep, engine in ((False, "head"), (True, "specialist")):
        pred = UniversalPredictor(model, task="vessels", engine="eager", fast=True, keep_specialists=keep)
        assert [p.engine for p in pred.predict(images)] == [engine] * 2
    with pytest.raises(ValueError, match="fast mode only"):
        UniversalPredictor(model, keep_specialists=True)
    plain = load_model(make_tiny_universal(tmp_path / "plain")).model
    with pytest.raises(ValueError, match="no student encoder"):
        UniversalPredictor(plain, fast=True)
