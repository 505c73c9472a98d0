import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.filters import threshold_otsu

from medseg.ops import (
    Cleanup,
    OtsuPseudoMask,
    otsu_pseudo_mask,
    otsu_pseudo_mask_torch,
    otsu_threshold,
    otsu_threshold_torch,
    to_gray,
)


@settings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(2, 20), st.integers(2, 20))))
def test_threshold_equals_skimage(gray):
    if gray.min() == gray.max():
        assert otsu_threshold(gray) == gray.flat[0]
        return
    assert otsu_threshold(gray) == threshold_otsu(gray)


def test_batched_threshold_equals_numpy(rng):
    g = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    g[2] = 7  # constant image in the batch
    t = otsu_threshold_torch(torch.from_numpy(g)).tolist()
    assert t == [otsu_threshold(x) for x in g]


def test_gray_is_bt601_like_opencv(rng):
    import cv2

    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_gray(img), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))


def _disk_image(bright_object: bool) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:40, 0:40]
    obj = (yy - 20) ** 2 + (xx - 20) ** 2 <= 64
    img = np.where(obj, 200, 50) if bright_object else np.where(obj, 50, 200)
    return np.repeat(img[..., None], 3, -1).astype(np.uint8), obj


@pytest.mark.parametrize("bright_object", [True, False])
def test_polarity(bright_object):
    img, obj = _disk_image(bright_object)
    np.testing.assert_array_equal(otsu_pseudo_mask(img, "auto"), obj)
    fixed = otsu_pseudo_mask(img, "bright" if bright_object else "dark")
    np.testing.assert_array_equal(fixed, obj)
    np.testing.assert_array_equal(otsu_pseudo_mask(img, "dark" if bright_object else "bright"), ~obj)


def test_constant_image_gives_empty_mask():
    img = np.full((8, 8, 3), 90, np.uint8)
    for pol in ("bright", "dark", "auto"):
        assert not otsu_pseudo_mask(img, pol).any()


@pytest.mark.parametrize("polarity", ["bright", "dark", "auto"])
def test_torch_matches_numpy(rng, polarity):
    imgs = np.stack([_disk_image(True)[0], _disk_image(False)[0], rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
                     np.full((40, 40, 3), 3, np.uint8)])
    cleanup = Cleanup(min_size=3, fill_holes=True)
    t = otsu_pseudo_mask_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2), polarity, cleanup=cleanup).numpy()
    n = np.stack([otsu_pseudo_mask(i, polarity, cleanup=cleanup) for i in imgs])
    np.testing.assert_array_equal(t, n)
    tf = OtsuPseudoMask(polarity)
    np.testing.assert_array_equal(tf(imgs[0]), otsu_pseudo_mask(imgs[0], polarity))


def test_cleanup_removes_specks_and_fills_holes():
    m = np.zeros((20, 20), bool)
    m[2:12, 2:12] = True
    m[6, 6] = False  # hole
    m[17, 17] = True  # speck
    out = Cleanup(min_size=4, fill_holes=True)(m)
    assert out[6, 6] and not out[17, 17] and out.sum() == 100
    opened = Cleanup(opening_radius=1)(m)
    assert not opened[17, 17]


def test_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        otsu_pseudo_mask(np.zeros((4, 4), np.float32))
