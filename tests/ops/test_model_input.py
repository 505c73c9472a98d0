"""The model-input transforms (:mod:`medseg.ops.model_input`): grey in three channels, then the edge magnitude."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from medseg.ops import edge_filter_numpy, grey_rgb, prepare_input, to_gray


@settings(max_examples=25, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_grey_rgb_repeats_the_bt601_grey_and_is_idempotent(img: np.ndarray) -> None:
    g = grey_rgb(img)
    assert g.shape == img.shape and g.dtype == np.uint8
    assert (g == to_gray(img)[..., None]).all()
    np.testing.assert_array_equal(grey_rgb(g), g)  # grey stays grey


def test_prepare_input_orders_grey_before_the_edge_and_rgb_is_the_identity() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    assert prepare_input(img) is img
    np.testing.assert_array_equal(prepare_input(img, color="grey", edge="kirsch"),
                                  edge_filter_numpy(grey_rgb(img), "kirsch"))
    # a hand-computed pixel: BT.601 of (255, 0, 0) is round(0.299 · 255) = 76
    assert grey_rgb(np.array([[[255, 0, 0]]], np.uint8)).tolist() == [[[76, 76, 76]]]
    with pytest.raises(ValueError, match="colour"):
        prepare_input(img, color="hsv")  # type: ignore[arg-type]


def test_model_input_is_the_recorded_transform() -> None:
    """``ModelInput`` from a ``model.json`` applies colour, then edge, exactly as ``prepare_input``; RGB without an
    edge leaves the image untouched (the same array)."""
    from medseg.ops import ModelInput

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    t = ModelInput.from_meta({"color": "grey", "edge": "sobel"})
    assert (t.color, t.edge) == ("grey", "sobel") and not t.identity
    assert np.array_equal(t(image), prepare_input(image, color="grey", edge="sobel"))
    plain = ModelInput.from_meta({})
    assert plain.identity and plain(image) is image and ModelInput.from_meta({"edge": None}) == plain
    with pytest.raises(ValueError, match="colour"):
        ModelInput("blue")  # type: ignore[arg-type]
