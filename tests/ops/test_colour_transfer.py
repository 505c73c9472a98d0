"""Reinhard colour transfer: the foreground's CIELAB statistics land on the target's (up to 8-bit rounding), the
black field is untouched, an image moved to its own statistics barely changes, and bad input is refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from medseg.ops.colour_transfer import ColourStats, colour_stats, reference_stats, transfer_colour


def _fundus_like(seed: int, tint: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 28 ** 2
    img[disc] = np.clip(rng.normal(tint, 12, size=(disc.sum(), 3)), 20, 255).astype(np.uint8)
    return img


def test_the_foreground_takes_the_target_statistics_and_the_field_stays_black() -> None:
    src, ref = _fundus_like(0, (150, 60, 30)), _fundus_like(1, (110, 90, 70))
    target = colour_stats(ref)
    out = transfer_colour(src, target)
    got = colour_stats(out)
    np.testing.assert_allclose(got.mean, target.mean, atol=1.5)
    np.testing.assert_allclose(got.std, target.std, rtol=0.1, atol=1.0)
    field = src.max(axis=2) <= 10
    assert field.any() and np.array_equal(out[field], src[field])
    # its own statistics: the image comes back up to the round trip through 8-bit CIELAB
    same = transfer_colour(src, colour_stats(src))
    ref_roundtrip = cv2.cvtColor(cv2.cvtColor(src, cv2.COLOR_RGB2LAB), cv2.COLOR_LAB2RGB)
    assert np.abs(same.astype(int) - ref_roundtrip.astype(int)).max() <= 2


def test_reference_statistics_are_the_mean_over_images() -> None:
    imgs = [_fundus_like(i, (120 + 10 * i, 70, 40)) for i in range(3)]
    ref = reference_stats(imgs)
    each = [colour_stats(i) for i in imgs]
    np.testing.assert_allclose(ref.mean, np.mean([s.mean for s in each], 0))
    assert ColourStats.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError, match="at least one"):
        reference_stats([])


def test_black_or_bad_images() -> None:
    black = np.zeros((8, 8, 3), np.uint8)
    assert np.array_equal(transfer_colour(black, ColourStats((100, 128, 128), (10, 5, 5))), black)
    with pytest.raises(ValueError, match="uint8 RGB"):
        transfer_colour(np.zeros((8, 8), np.uint8), ColourStats((1, 1, 1), (1, 1, 1)))


def test_an_image_goes_to_the_reference_nearest_its_own_colours() -> None:
    from medseg.ops.colour_transfer import nearest_reference, transfer_to_nearest

    red, blue = _fundus_like(0, (170, 50, 30)), _fundus_like(1, (40, 60, 160))
    refs = {"red": colour_stats(_fundus_like(2, (160, 60, 40))), "blue": colour_stats(_fundus_like(3, (50, 70, 150)))}
    assert nearest_reference(colour_stats(red), refs) == "red" and nearest_reference(colour_stats(blue), refs) == "blue"
    np.testing.assert_array_equal(transfer_to_nearest(red, refs), transfer_colour(red, refs["red"]))
    with pytest.raises(ValueError, match="at least one"):
        nearest_reference(colour_stats(red), {})
