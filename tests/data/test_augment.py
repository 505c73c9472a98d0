"""Patch sampling and augmentations: deterministic per draw, image and mask transformed alike, small images padded
(never upscaled), foreground oversampling as configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medseg.data import CatalogEntry
from medseg.data.augment import (
    AugmentOptions,
    colour_jitter,
    extract_patch,
    flip_rotate,
    intensity,
    patch_centre,
    random_affine,
)
from medseg.training.dataset import NativeDataset, PatchDataset, build_cache, open_cache

ALL = AugmentOptions(flips=True, rot90=True, affine_p=1.0, intensity_p=1.0, gamma_p=1.0)


def _entries(tmp_path: Path, shapes: list[tuple[int, int]]) -> list[CatalogEntry]:
    rng = np.random.default_rng(1)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    out = []
    for i, (h, w) in enumerate(shapes):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        m = np.zeros((h, w), np.uint8)
        m[h // 3:h // 3 + 3, w // 2:w // 2 + 4] = 255  # a small object: uniform patches often miss it
        Image.fromarray(img).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(m).save(tmp_path / "masks" / f"c{i}.png")
        out.append(CatalogEntry(tmp_path / "images" / f"c{i}.png", tmp_path / "masks" / f"c{i}.png", "xray", "d",
                                f"c{i}"))
    return out


@pytest.fixture()
def split(tmp_path: Path):
    return open_cache(build_cache(_entries(tmp_path, [(90, 120), (70, 64), (20, 24)]), tmp_path / "cache",
                                  img_size=32))


def test_cache_holds_native_images(split, tmp_path: Path) -> None:
    for i in range(len(split)):
        np.testing.assert_array_equal(split.native_image(i), np.asarray(Image.open(tmp_path / "images" / f"c{i}.png")))


def test_patches_are_deterministic_per_draw_and_differ_between_draws(split) -> None:
    ds = PatchDataset(split, patch_size=32, augment=ALL, seed=5)
    again = PatchDataset(split, patch_size=32, augment=ALL, seed=5)
    for draw in (0, 4, 17):
        a, b = ds[draw], again[draw]
        for k in a:
            assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    assert not np.array_equal(ds[0]["image"].numpy(), ds[3]["image"].numpy())  # same row, another draw
    assert ds[0]["image"].shape == (3, 32, 32) and ds[0]["mask"].shape == (1, 32, 32)


def test_foreground_oversampling(split) -> None:
    always = PatchDataset(split, patch_size=16, foreground_oversample=1.0, seed=0)
    never = PatchDataset(split, patch_size=16, foreground_oversample=0.0, seed=0)
    draws = [3 * k for k in range(60)]  # row 0: 90×120 image, 3×4 object
    assert all(always[d]["mask"].sum() > 0 for d in draws)
    share = np.mean([never[d]["mask"].sum() > 0 for d in draws])
    assert share < 0.3  # a 16² window meets the object in about (16+3)(16+4) / (75·105) ≈ 5 % of places


def test_a_small_image_is_padded_not_upscaled(split) -> None:
    ds = PatchDataset(split, patch_size=32, seed=0)
    item = ds[2]  # row 2: a 20×24 image
    img = item["image"].numpy()
    content = np.argwhere(img.sum(0) > 0)
    h = content[:, 0].max() - content[:, 0].min() + 1
    w = content[:, 1].max() - content[:, 1].min() + 1
    assert (h, w) <= (20, 24) and img.shape == (3, 32, 32)
    assert item["mask"].sum() == 12  # the whole 3×4 object, unresampled


def test_identity_affine_equals_plain_crop() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 40, 50)).astype(np.float32)
    mask = (rng.random((40, 50)) > 0.5).astype(np.uint8)
    for centre in ((20, 25), (3, 4), (38, 49)):
        a = extract_patch(img, mask, centre, 16)
        b = extract_patch(img, mask, centre, 16, np.eye(2))
        np.testing.assert_allclose(a[0], b[0], atol=1e-6)
        np.testing.assert_array_equal(a[1], b[1])


def test_spatial_augmentation_moves_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    mask = (rng.random((24, 24)) > 0.5).astype(np.uint8)
    image = np.repeat(mask[None].astype(np.float32), 3, axis=0)  # the image *is* the mask
    for seed in range(12):
        r = np.random.default_rng(seed)
        im, m = flip_rotate(image, mask, r, ALL)
        np.testing.assert_array_equal(im[0] > 0.5, m > 0)
        matrix = random_affine(np.random.default_rng(seed), ALL)
        pi, pm = extract_patch(image, mask, (12, 12), 24, matrix)
        agree = np.mean((pi[0] > 0.5) == (pm > 0))
        assert agree > 0.9  # bilinear image vs nearest mask differ only along edges


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_intensity_keeps_range_and_constant_images_constant(value: float, seed: int) -> None:
    image = np.full((3, 8, 8), value, np.float32)
    out = intensity(image, np.random.default_rng(seed), ALL)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.ptp(out) < 1e-6  # brightness, contrast about the mean and gamma keep a constant image constant


def test_no_augmentation_is_identity() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((3, 8, 8)).astype(np.float32)
    mask = np.zeros((8, 8), np.uint8)
    off = AugmentOptions(flips=False)
    assert random_affine(rng, off) is None
    np.testing.assert_array_equal(flip_rotate(image, mask, rng, off)[0], image)
    np.testing.assert_array_equal(intensity(image, rng, off), image)


def test_patch_centre_keeps_patch_inside_large_images() -> None:
    mask = np.zeros((50, 60), bool)
    mask[0, 0] = True  # a corner object: the foreground patch is shifted inside
    for seed in range(20):
        rng = np.random.default_rng(seed)
        for fg in (True, False):
            cy, cx = patch_centre(mask, 16, rng, foreground=fg)
            assert 8 <= cy <= 50 - 8 and 8 <= cx <= 60 - 8


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="affine_p"):
        AugmentOptions(affine_p=1.5)
    with pytest.raises(ValueError, match="gamma"):
        AugmentOptions(gamma=(1.5, 0.7))
    with pytest.raises(ValueError, match="colour_p"):
        AugmentOptions(colour_p=-0.1)


def test_colour_p_recolours_patches_only_where_asked_and_leaves_masks_and_geometry_alone(split) -> None:
    """``colour_p`` = 0 replays the patches of a run without it (no extra draw); = 1 recolours every patch, with
    the same mask and, as a photometric change, the same patch position (the mask is drawn before the colours)."""
    base = PatchDataset(split, patch_size=32, augment=ALL, seed=5)
    off = PatchDataset(split, patch_size=32, augment=AugmentOptions(**{**ALL.__dict__, "colour_p": 0.0}), seed=5)
    on = PatchDataset(split, patch_size=32, augment=AugmentOptions(**{**ALL.__dict__, "colour_p": 1.0}), seed=5)
    changed = 0
    for draw in range(12):
        a, b, c = base[draw], off[draw], on[draw]
        assert np.array_equal(a["image"].numpy(), b["image"].numpy())
        assert np.array_equal(a["mask"].numpy(), c["mask"].numpy())
        img = c["image"].numpy()
        assert img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
        changed += not np.allclose(a["image"].numpy(), img)
    assert changed >= 10


def test_native_dataset_serves_whole_images(split) -> None:
    ds = NativeDataset(split)
    assert ds[0]["image"].shape == (3, 90, 120) and ds[1]["mask"].shape == (1, 70, 64)
    assert float(ds[0]["image"].min()) == 0.0 and float(ds[0]["image"].max()) == 1.0


@pytest.mark.parametrize("affine", [False, True])
def test_patch_of_raw_image_scaled_after_equals_patch_of_scaled_image(affine: bool) -> None:
    """PatchDataset cuts the uint8 image and scales only the patch; padding ``fill=lo`` keeps that exact."""
    from medseg.data.geometry import minmax_unit

    rng = np.random.default_rng(0)
    raw = (rng.random((3, 50, 70)) * 200 + 30).astype(np.uint8)
    mask = (rng.random((50, 70)) > 0.5).astype(np.uint8)
    lo, hi = float(raw.min()), float(raw.max())
    matrix = np.array([[0.9, 0.1], [-0.1, 1.1]]) if affine else None
    want, want_mask = extract_patch(minmax_unit(raw), mask, (5, 60), 32, matrix)
    got, got_mask = extract_patch(raw, mask, (5, 60), 32, matrix, fill=lo)
    np.testing.assert_allclose((got - lo) / (hi - lo), want, atol=1e-6)
    np.testing.assert_array_equal(got_mask, want_mask)


def test_dataset_balanced_sampling_gives_each_dataset_an_equal_share(tmp_path: Path) -> None:
    entries = _entries(tmp_path, [(40, 40)] * 5)
    entries = [CatalogEntry(e.image, e.mask, e.modality, "big" if i < 4 else "small", e.case_id)
               for i, e in enumerate(entries)]
    split = open_cache(build_cache(entries, tmp_path / "cache", img_size=32))
    balanced = PatchDataset(split, patch_size=16, sampling="dataset", length=400, seed=3)
    small = [i for i in range(len(split)) if split.info[i]["dataset"] == "small"]
    share = np.mean([int(balanced[d]["index"]) in small for d in range(400)])
    assert 0.4 < share < 0.6  # 1/2 by dataset, against 1/5 by image
    np.testing.assert_array_equal(balanced[7]["image"], PatchDataset(split, patch_size=16, sampling="dataset",
                                                                     length=400, seed=3)[7]["image"])
    with pytest.raises(ValueError, match="sampling"):
        PatchDataset(split, patch_size=16, sampling="modality")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), grey=st.booleans(), h=st.integers(4, 16), w=st.integers(4, 16))
def test_colour_jitter_keeps_range_padding_and_greyness(seed: int, grey: bool, h: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    img = np.zeros((3, 16, 16), np.float32)
    content = rng.random((1 if grey else 3, h, w)).astype(np.float32)
    img[:, :h, :w] = content
    out = colour_jitter(img, np.random.default_rng(seed), (h, w))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not out[:, h:].any() and not out[:, :, w:].any()  # the letterbox padding stays 0
    if grey:  # a grey image stays grey (no white balance, no saturation on it)
        assert np.allclose(out[0], out[1]) and np.allclose(out[1], out[2])
    again = colour_jitter(img, np.random.default_rng(seed), (h, w))
    assert np.array_equal(out, again)  # a pure function of the generator
    assert not np.array_equal(out, img)


def test_the_jitter_views_recolour_images_reproducibly_and_leave_masks_alone() -> None:
    from medseg.training.embedding_cache import JITTER_SEED, apply_view

    rng = np.random.default_rng(0)
    img = rng.random((3, 16, 16)).astype(np.float32)  # the image cache's [0, 1] images
    img[:, 10:] = 0
    a = apply_view(img, (10, 16), "jitter1", row=3)
    assert np.array_equal(a, apply_view(img, (10, 16), "jitter1", row=3))
    assert not np.array_equal(a, apply_view(img, (10, 16), "jitter1", row=4))
    assert not np.array_equal(a, apply_view(img, (10, 16), "jitter2", row=3))
    assert a.max() <= 1 and not a[:, 10:].any()
    # the view is colour_jitter of the image as it is (not rescaled), drawn from (view, row)
    np.testing.assert_array_equal(a, colour_jitter(img, np.random.default_rng((JITTER_SEED, 1, 3)), (10, 16)))
    mask = (rng.random((16, 16)) > 0.5).astype(np.uint8)
    assert np.array_equal(apply_view(mask, (10, 16), "jitter1", row=3), mask)


@settings(max_examples=30, deadline=None)
@given(row=st.integers(0, 100_000), view=st.sampled_from(["jitter1", "jitter2"]))
def test_a_jitter_view_keeps_a_cache_image_in_range_and_its_brightness_within_bounds(row: int, view: str) -> None:
    """Regression: the jitters once treated the cache's [0, 1] images as [0, 255], so gamma scaled brightness by up
    to ×5 and pushed values above 1. Brightness, contrast and gamma within their ranges move the mean of a mid-grey
    image by well under ×2.5 either way."""
    from medseg.training.embedding_cache import apply_view

    img = np.full((3, 12, 12), 0.5, np.float32)
    img[0] = np.linspace(0.2, 0.8, 12, dtype=np.float32)
    out = apply_view(img, (12, 12), view, row)
    assert 0 <= out.min() and out.max() <= 1
    assert 0.4 <= out.mean() / img.mean() <= 2.5


@settings(max_examples=50, deadline=None)
@given(h=st.integers(2, 300), w=st.integers(2, 300), seed=st.integers(0, 10_000))
def test_zoom_crop_box_lies_inside_the_region_with_the_asked_share(h: int, w: int, seed: int) -> None:
    from medseg.data.augment import zoom_crop_box

    top, left, ch, cw = zoom_crop_box(np.random.default_rng(seed), (h, w))
    assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch >= 1 and cw >= 1
    if min(h, w) >= 50:  # rounding aside: 45–90 % of the pixels (clipped at the region's sides)
        assert 0.3 <= ch * cw / (h * w) <= 0.92


def test_zoom_crop_of_a_constant_region_is_constant_and_keeps_shape_dtype_and_padding() -> None:
    from medseg.data.augment import zoom_crop

    img = np.zeros((3, 16, 16), np.float32)
    img[:, :10, :12] = 0.5
    out = zoom_crop(img, (2, 3, 5, 6), (10, 12))
    assert out.shape == img.shape and out.dtype == img.dtype
    np.testing.assert_allclose(out[:, :10, :12], 0.5)
    assert (out[:, 10:] == 0).all() and (out[:, :, 12:] == 0).all()
    mask = np.zeros((16, 16), np.uint8)
    mask[2:7, 3:9] = 2  # the crop box exactly: the whole region becomes that label
    assert (zoom_crop(mask, (2, 3, 5, 6), (10, 12))[:10, :12] == 2).all()
