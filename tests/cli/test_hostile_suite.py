"""A generated set of more than 40 bad and odd files, run through ``data scan``, ``data convert``, ``predict`` and
``evaluate`` as a user would: for each command, every unusable file is named in one line, the exit code is the
documented one (0 all done, 1 something skipped, 2 stopped), every good file's output is there and right, no input
is changed and no output is written twice."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from medseg.cli.main import main
from medseg.data.loading import file_stem
from medseg.inference import Predictor
from medseg.models import build_model
from medseg.models.io import load_model, save_model_folder
from tests.conftest import tiny_model_config

RNG = np.random.default_rng(7)


def _img(h: int = 24, w: int = 30, c: int = 3, dtype=np.uint8) -> np.ndarray:
    hi = 255 if dtype == np.uint8 else 65535
    return RNG.integers(0, hi, (h, w, c) if c else (h, w)).astype(dtype)


def _mask(h: int = 24, w: int = 30) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:12, 5:20] = 255
    return m


def _png(path: Path, arr: np.ndarray, **kw) -> None:
    Image.fromarray(arr, **kw).save(path)


def build_hostile_tree(root: Path) -> dict[str, str]:
    """Write the catalogue ``root/xray/hostile/{images,masks}`` and return ``image file name → kind``:
    ``good`` (readable, paired with a good mask), ``bad_image`` (the image cannot be used), ``bad_mask`` (the image
    is fine, its mask is not), ``unpaired`` (a good image without a mask)."""
    images, masks = root / "xray" / "hostile" / "images", root / "xray" / "hostile" / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    kinds: dict[str, str] = {}

    def good(name: str, write, h: int = 24, w: int = 30) -> None:
        write(images / name)
        _png(masks / (Path(name).name.split(".")[0] + ".png"), _mask(h, w))
        kinds[name] = "good"

    def bad(name: str, data: bytes) -> None:
        (images / name).write_bytes(data)
        _png(masks / (name.split(".")[0] + ".png"), _mask())
        kinds[name] = "bad_image"

    good("rgb.png", lambda p: _png(p, _img()))
    good("grey.png", lambda p: _png(p, _img(c=0)))
    good("sixteen.png", lambda p: _png(p, _img(c=0, dtype=np.uint16)))
    good("rgba.png", lambda p: _png(p, _img(c=4), mode="RGBA"))
    good("palette.png", lambda p: Image.fromarray(_img()).convert("P").save(p))
    good("bilevel.png", lambda p: Image.fromarray(_img(c=0) > 128).save(p))
    good("photo.jpg", lambda p: Image.fromarray(_img()).save(p, quality=90))
    good("cmyk.jpg", lambda p: Image.fromarray(_img()).convert("CMYK").save(p))
    good("png_named.jpg", lambda p: Image.fromarray(_img()).save(p, format="PNG"))  # content decides
    good("bitmap.bmp", lambda p: _png(p, _img()))
    good("single.gif", lambda p: Image.fromarray(_img()).convert("P").save(p))
    frames = [Image.fromarray(_img()).convert("P") for _ in range(3)]
    good("animated.gif", lambda p: frames[0].save(p, save_all=True, append_images=frames[1:]))
    good("float.tif", lambda p: tifffile.imwrite(p, _img(c=0).astype(np.float32) / 7))
    good("case_mask.png", lambda p: _png(p, _img()))  # a mask-like name is still an image to segment
    good("scan_gt.png", lambda p: _png(p, _img()))
    good("naïve ünïcode.png", lambda p: _png(p, _img()))
    good("with space.png", lambda p: _png(p, _img()))
    good("tiny.png", lambda p: _png(p, _img(2, 3)), 2, 3)
    good("thin.png", lambda p: _png(p, _img(1, 90)), 1, 90)
    good("wide.png", lambda p: _png(p, _img(8, 700)), 8, 700)
    good("vol.nii.gz", lambda p: nib.save(nib.Nifti1Image(_img(24, 30, 0).astype(np.float32), np.eye(4)), p))
    (images / "vol.nii.gz").unlink()  # NIfTI: one slice here (a mask must match its shape)
    nib.save(nib.Nifti1Image(_img(24, 30, 0).astype(np.float32)[..., None], np.eye(4)), images / "vol.nii.gz")
    (masks / "vol.png").unlink()
    nib.save(nib.Nifti1Image((_mask() > 0).astype(np.uint8)[..., None], np.eye(4)), masks / "vol.nii.gz")
    (images / "cvpr.npz").write_bytes(b"")
    np.savez_compressed(images / "cvpr.npz", imgs=_img())
    kinds["cvpr.npz"] = "good"
    _png(masks / "cvpr.png", _mask())

    bad("zero.png", b"")
    bad("truncated.png", io_png(_img())[:60])
    bad("text.png", b"just some text, not an image\n")
    bad("text.jpg", b"more text")
    bad("text.npz", b"I am not an npz archive")
    bad("noise.tif", RNG.integers(0, 255, 200, dtype=np.uint8).tobytes())
    bad("header_only.dcm", b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00")
    nii = io.BytesIO()
    bad("cut.nii.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 40)
    del nii
    np.savez(images / "no_imgs.npz", gts=_mask())
    _png(masks / "no_imgs.png", _mask())
    kinds["no_imgs.npz"] = "bad_image"
    np.savez(images / "pickled.npz", imgs=np.array([{"a": 1}], dtype=object))
    _png(masks / "pickled.png", _mask())
    kinds["pickled.npz"] = "bad_image"
    nan = _img(c=0).astype(np.float32)
    nan[:3] = np.nan  # NaN pixels are refused: no value to segment them by
    tifffile.imwrite(images / "some_nan.tif", nan)
    _png(masks / "some_nan.png", _mask())
    kinds["some_nan.tif"] = "bad_image"
    allnan = np.full((24, 30), np.nan, np.float32)
    tifffile.imwrite(images / "all_nan.tif", allnan)
    _png(masks / "all_nan.png", _mask())
    kinds["all_nan.tif"] = "bad_image"

    def bad_mask(name: str, write_mask) -> None:
        _png(images / name, _img())
        write_mask(masks / name)
        kinds[name] = "bad_mask"

    bad_mask("mask_size.png", lambda p: _png(p, _mask(20, 20)))
    bad_mask("mask_text.png", lambda p: p.write_bytes(b"not a mask"))
    bad_mask("mask_zero_bytes.png", lambda p: p.write_bytes(b""))
    bad_mask("mask_multivalue.png", lambda p: _png(p, (_mask() // 255 * np.arange(30, dtype=np.uint8)[None])))
    for name in ("orphan_image.png", "another_orphan.png"):
        _png(images / name, _img())
        kinds[name] = "unpaired"
    _png(masks / "orphan_mask.png", _mask())
    (images / ".hidden.png").write_bytes(io_png(_img()))
    (images / "folder_named.png").mkdir()
    os.symlink(images / "gone.png", images / "dangling.png")
    os.symlink(images / "loop_b.png", images / "loop_a.png")
    os.symlink(images / "loop_a.png", images / "loop_b.png")
    return kinds


def io_png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("hostile") / "data"
    return root, build_hostile_tree(root)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    opts = dict(tiny_model_config("basic_unet"))
    return save_model_folder(build_model("basic_unet", **opts), tmp_path_factory.mktemp("m") / "unet",
                             name="basic_unet", options=opts, img_size=64)


def test_the_set_is_big_enough(tree) -> None:
    _, kinds = tree
    odd = {"hidden", "folder", "dangling", "loops a/b", "orphan mask"}
    assert len(kinds) + len(odd) >= 40
    assert sum(k != "good" for k in kinds.values()) >= 15


def test_scan_names_every_unusable_file_and_keeps_going(tree, tmp_path: Path, capsys) -> None:
    root, kinds = tree
    before = _checksums(root)
    report = tmp_path / "scan.json"
    assert main(["data", "scan", str(root), "--json", str(report)]) == 0
    assert main(["data", "scan", str(root), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    problems = json.loads(report.read_text())["problems"]
    named = "\n".join(p["path"] for p in problems)
    for name, kind in kinds.items():
        if kind in ("bad_image", "bad_mask"):
            assert name in named, name
    for odd in ("dangling.png", "loop_a.png", "folder_named.png", "orphan_mask.png"):
        assert odd in named, odd
    group = json.loads(report.read_text())["groups"][0]
    assert isinstance(group["files"], int) and isinstance(group["height_max"], int)
    assert _checksums(root) == before


def test_convert_skips_and_names_the_unusable_and_writes_the_rest(tree, tmp_path: Path, capsys) -> None:
    root, kinds = tree
    before = _checksums(root)
    assert main(["data", "convert", str(root), str(tmp_path / "npz"), "--to", "npz", "--on-error", "skip"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    written = {p.name for p in (tmp_path / "npz").rglob("*.npz")}
    for name, kind in kinds.items():
        stem = name.split(".")[0]
        if kind == "good":
            assert f"{stem}.npz" in written, name
        elif kind in ("bad_image", "bad_mask"):
            assert name in err, name
    assert _checksums(root) == before


def test_predict_segments_every_good_file_once_and_names_the_rest(tree, model: Path, tmp_path: Path,
                                                                    capsys) -> None:
    root, kinds = tree
    images = root / "xray" / "hostile" / "images"
    before = _checksums(root)
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(images), "-o", str(out), "--on-error", "skip"]) == 1
    said = capsys.readouterr()
    assert "Traceback" not in said.err
    overlays = {p.name for p in out.glob("*_overlay.png")}
    assert ".hidden_overlay.png" not in overlays and "1 hidden files" in said.out
    for name, kind in kinds.items():
        stem = name.split(".")[0]
        if kind == "bad_image":
            assert name in said.err, name
            assert f"{stem}_overlay.png" not in overlays, name
        else:  # good, bad_mask, unpaired: the image itself is fine
            assert f"{stem}_overlay.png" in overlays, name
    # one line per skipped file
    skipped = [ln for ln in said.err.splitlines() if ln.startswith("  ") and str(images) in ln]
    assert len(skipped) == sum(k == "bad_image" for k in kinds.values())
    # a good output is what the predictor gives for that file
    ref = Predictor.for_model(load_model(model)).predict([np.asarray(Image.open(images / "rgb.png"))])[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "rgb.png")) > 0, ref.mask)
    assert _checksums(root) == before


def test_evaluate_skips_unusable_masks_and_scores_the_rest(tree, model: Path, tmp_path: Path, capsys) -> None:
    root, kinds = tree
    images = root / "xray" / "hostile" / "images"
    pred = tmp_path / "pred"
    main(["predict", str(model), str(images), "-o", str(pred), "--on-error", "skip"])
    capsys.readouterr()
    before = _checksums(root)
    out = tmp_path / "eval"
    code = main(["evaluate", str(pred), str(root), "-o", str(out), "--on-error", "skip", "--missing", "skip",
                 "--mask-mode", "nonzero"])
    said = capsys.readouterr()
    assert code == 1 and "Traceback" not in said.err
    summary = (out / "summary.md").read_text()
    scored = (out / "metrics.csv").read_text()
    for name, kind in kinds.items():
        if kind == "bad_mask" and name != "mask_multivalue.png":  # non-zero mode reads the multi-value mask
            assert name in summary and name in said.err, name
        elif kind == "good":  # scored under its own name, a mask-like one included
            assert f"\n{file_stem(name)}," in scored, name
    assert _checksums(root) == before
