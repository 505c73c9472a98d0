"""Hostile inputs: every reader and the catalog give a clear medseg error naming the file — no bare
tracebacks, and ``scan`` keeps going and reports them all."""

import io

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.data import discover, load_samples, resolve_modality, scan
from medseg.errors import InvalidInputError, UnknownModalityError


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _assert_names_file(exc: pytest.ExceptionInfo, path, *words: str) -> None:
    msg = str(exc.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".dcm", ".nii.gz", ".npz", ".bmp", ".gif"])
def test_zero_byte_file(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.write_bytes(b"")
    with pytest.raises(InvalidInputError) as e:
        load_samples(p)
    _assert_names_file(e, p, "empty")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".npz", ".nii.gz", ".dcm"])
def test_truncated_file(tmp_path, rng, ext):
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full{ext}"
    if ext in (".png", ".jpg"):
        Image.fromarray(img).save(full)
    elif ext == ".tif":
        tifffile.imwrite(full, img)
    elif ext == ".npz":
        np.savez_compressed(full, imgs=img)
    elif ext == ".nii.gz":
        nib.save(nib.Nifti1Image(img[..., 0].astype(np.float32), np.eye(4)), full)
    else:
        from tests.data.test_readers import make_dicom

        make_dicom(full, img[..., 0].astype(np.uint16))
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(InvalidInputError) as e:
        load_samples(cut)
    _assert_names_file(e, cut, "cannot read")


def test_garbage_with_image_extension(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"this is not an image at all")
    with pytest.raises(InvalidInputError) as e:
        load_samples(p)
    _assert_names_file(e, p)


def test_unsupported_and_missing(tmp_path):
    p = tmp_path / "notes.docx"
    p.write_bytes(b"x")
    with pytest.raises(InvalidInputError, match="unsupported file type"):
        load_samples(p)
    with pytest.raises(InvalidInputError, match="not found"):
        load_samples(tmp_path / "nope.png")


def test_image_mask_size_mismatch(tmp_path):
    (tmp_path / "i.png").write_bytes(_png_bytes(np.zeros((10, 12, 3), np.uint8)))
    (tmp_path / "m.png").write_bytes(_png_bytes(np.zeros((10, 11), np.uint8)))
    with pytest.raises(InvalidInputError) as e:
        load_samples(tmp_path / "i.png", tmp_path / "m.png")
    _assert_names_file(e, tmp_path / "m.png", "10×11", "10×12")


def test_non_binary_mask_policies(tmp_path):
    m = np.array([[0, 1], [2, 255]], np.uint8)
    (tmp_path / "i.png").write_bytes(_png_bytes(np.zeros((2, 2), np.uint8)))
    (tmp_path / "m.png").write_bytes(_png_bytes(m))
    with pytest.raises(InvalidInputError) as e:
        load_samples(tmp_path / "i.png", tmp_path / "m.png")
    _assert_names_file(e, tmp_path / "m.png", "not binary", "0, 1, 2, 255")
    s = load_samples(tmp_path / "i.png", tmp_path / "m.png", mask_mode="nonzero")[0]
    assert s.mask.tolist() == [[False, True], [True, True]]
    s = load_samples(tmp_path / "i.png", tmp_path / "m.png", mask_mode="labels")[0]
    assert s.mask.tolist() == [[0, 1], [2, 255]]


@pytest.mark.parametrize("values", [(0, 1), (0, 255), (0, 7)])
def test_binary_masks_any_foreground_value(tmp_path, values):
    m = np.array([[values[0], values[1]]], np.uint8)
    (tmp_path / "i.png").write_bytes(_png_bytes(np.zeros((1, 2), np.uint8)))
    (tmp_path / "m.png").write_bytes(_png_bytes(m))
    assert load_samples(tmp_path / "i.png", tmp_path / "m.png")[0].mask.tolist() == [[False, True]]


def test_colour_mask_with_differing_channels(tmp_path):
    m = np.zeros((3, 3, 3), np.uint8)
    m[0, 0] = (255, 0, 0)
    (tmp_path / "i.png").write_bytes(_png_bytes(np.zeros((3, 3), np.uint8)))
    (tmp_path / "m.png").write_bytes(_png_bytes(m))
    with pytest.raises(InvalidInputError, match="colour mask"):
        load_samples(tmp_path / "i.png", tmp_path / "m.png")


def test_nan_in_float_tiff_and_nifti(tmp_path):
    arr = np.ones((4, 4), np.float32)
    arr[1, 1] = np.nan
    tifffile.imwrite(tmp_path / "n.tif", arr)
    nib.save(nib.Nifti1Image(arr[..., None], np.eye(4)), tmp_path / "n.nii")
    for f in ("n.tif", "n.nii"):
        with pytest.raises(InvalidInputError) as e:
            load_samples(tmp_path / f)
        _assert_names_file(e, tmp_path / f, "NaN")
        s = load_samples(tmp_path / f, nan_policy="zero")[0]
        assert s.image.dtype == np.uint8


def test_sixteen_bit_rgba_and_float_inputs_are_accepted(tmp_path, rng):
    tifffile.imwrite(tmp_path / "a.tif", rng.integers(0, 65535, (5, 6, 4), dtype=np.uint16))
    tifffile.imwrite(tmp_path / "f.tif", rng.normal(size=(5, 6)).astype(np.float32))
    for f in ("a.tif", "f.tif"):
        s = load_samples(tmp_path / f)[0]
        assert s.image.shape == (5, 6, 3) and s.image.dtype == np.uint8


def test_npz_without_imgs_and_with_bad_gts(tmp_path):
    np.savez(tmp_path / "a.npz", foo=np.zeros(3))
    with pytest.raises(InvalidInputError, match="no 'imgs'"):
        load_samples(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", imgs=np.zeros((4, 4, 3), np.uint8), gts=np.zeros((3, 4), np.uint8))
    with pytest.raises(InvalidInputError, match="does not match"):
        load_samples(tmp_path / "b.npz")
    obj = tmp_path / "c.npz"
    np.savez(obj, imgs=np.array([object()], dtype=object))
    with pytest.raises(InvalidInputError, match=r"c\.npz"):
        load_samples(obj)


def test_unknown_modality():
    assert resolve_modality("X-Ray", ["xray", "fundus"]) == "xray"
    with pytest.raises(UnknownModalityError) as e:
        resolve_modality("thermography", ["xray", "fundus"])
    assert "thermography" in str(e.value) and "fundus" in str(e.value)


def test_odd_filenames(tmp_path):
    root = tmp_path / "root" / "Dermoscopy" / "my set"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    names = ["case 1.png", "ünïcode-ß.png", "many.dots.in.name.png", "(brackets)[1].png"]
    for n in names:
        (root / "images" / n).write_bytes(_png_bytes(np.zeros((4, 4, 3), np.uint8)))
        (root / "masks" / n).write_bytes(_png_bytes(np.eye(4, dtype=np.uint8) * 255))
    (root / "images" / ".hidden.png").write_bytes(b"junk")
    entries, problems = discover(tmp_path / "root")
    assert sorted(e.case_id for e in entries) == sorted(n[:-4] for n in names)
    assert all(e.mask is not None for e in entries) and not problems
    assert all(e.modality == "dermoscopy" and e.dataset == "my set" for e in entries)


def test_scan_reports_every_problem_and_keeps_going(tmp_path):
    root = tmp_path / "data" / "fundus" / "bad"
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    ok = _png_bytes(np.zeros((4, 4, 3), np.uint8))
    mask = _png_bytes(np.eye(4, dtype=np.uint8) * 255)
    (root / "images" / "good.png").write_bytes(ok)
    (root / "masks" / "good.png").write_bytes(mask)
    (root / "images" / "trunc.png").write_bytes(ok[:30])
    (root / "masks" / "trunc.png").write_bytes(mask)
    (root / "images" / "zero.png").write_bytes(b"")
    (root / "masks" / "zero.png").write_bytes(mask)
    (root / "images" / "size.png").write_bytes(ok)
    (root / "masks" / "size.png").write_bytes(_png_bytes(np.zeros((5, 4), np.uint8)))
    (root / "images" / "empty.png").write_bytes(ok)
    (root / "masks" / "empty.png").write_bytes(_png_bytes(np.zeros((4, 4), np.uint8)))
    (root / "images" / "labels.png").write_bytes(ok)
    (root / "masks" / "labels.png").write_bytes(_png_bytes(np.array([[0, 1, 2, 255]] * 4, np.uint8)))
    (root / "images" / "orphan.png").write_bytes(ok)
    (root / "masks" / "lonely.png").write_bytes(mask)
    (root / "images" / "readme.txt").write_text("hello")
    report = scan(tmp_path / "data")
    text = report.to_markdown()
    (g,) = report.groups
    assert g.files == 7 and g.unreadable == 4 and g.empty_masks == 1
    errors = {p.path.rsplit("/", 1)[-1]: p.problem for p in report.errors}
    assert set(errors) == {"trunc.png", "zero.png", "size.png", "labels.png"}
    warnings = " ".join(f"{p.path} {p.problem}" for p in report.problems if p.severity == "warning")
    for w in ("orphan image", "orphan mask", "readme.txt", "empty"):
        assert w in warnings
    assert "trunc.png" in text
