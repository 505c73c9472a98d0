import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from medseg.ops import EDGE_OPERATORS, EdgeFilter, edge_filter, edge_filter_numpy, edge_filter_torch, kirsch_kernels

images = arrays(np.uint8, st.tuples(st.integers(3, 24), st.integers(3, 24), st.just(3)))


def _kirsch_reference(img: np.ndarray, mode: str) -> np.ndarray:
    """Eight explicit correlations (CMMC approach), max over kernels, per channel."""
    chans = [np.max([ndi.correlate(img[..., c].astype(np.float64), k, mode=mode, cval=0.0) for k in kirsch_kernels()],
                    axis=0) for c in range(img.shape[-1])]
    return np.stack(chans, -1)


def test_kirsch_kernels_are_the_classic_compass_masks():
    k = kirsch_kernels()
    north = np.array([[5, 5, 5], [-3, 0, -3], [-3, -3, -3]])
    assert k.shape == (8, 3, 3)
    assert (k.sum(axis=(1, 2)) == 0).all()
    assert any(np.array_equal(np.rot90(k[i], r), north) for i in range(8) for r in range(4))
    # closed under 90° rotation: every rotated mask is in the set
    for kk in k:
        assert any(np.array_equal(np.rot90(kk), other) for other in k)


@pytest.mark.parametrize("padding,mode", [("replicate", "nearest"), ("reflect", "mirror"), ("zero", "constant")])
def test_kirsch_matches_eight_scipy_correlations(rng, padding, mode):
    img = rng.integers(0, 256, (33, 29, 3), dtype=np.uint8)
    ours = edge_filter_numpy(img, "kirsch", padding=padding, normalize="none")
    np.testing.assert_array_equal(ours, _kirsch_reference(img, mode))


def test_kirsch_matches_opencv_filter2d(rng):
    img = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    ref = np.max([cv2.filter2D(img.astype(np.float32), -1, k.astype(np.float32), borderType=cv2.BORDER_REPLICATE)
                  for k in kirsch_kernels()], axis=0)
    np.testing.assert_array_equal(edge_filter_numpy(img, "kirsch", normalize="none"), ref)


@pytest.mark.parametrize("op", ["sobel", "scharr"])
def test_derivative_operators_match_opencv(rng, op):
    g = rng.integers(0, 256, (30, 31)).astype(np.float64)
    ks = -1 if op == "scharr" else 3
    gx = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=ks, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=ks, borderType=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(edge_filter_numpy(g, op, normalize="none"), np.hypot(gx, gy), atol=1e-9)


def test_prewitt_and_laplacian_match_scipy(rng):
    g = rng.integers(0, 256, (30, 31)).astype(np.float64)
    px, py = ndi.prewitt(g, axis=1, mode="nearest"), ndi.prewitt(g, axis=0, mode="nearest")
    np.testing.assert_allclose(edge_filter_numpy(g, "prewitt", normalize="none"), np.hypot(px, py), atol=1e-9)
    lap = np.abs(ndi.laplace(g, mode="nearest"))
    np.testing.assert_allclose(edge_filter_numpy(g, "laplacian", normalize="none"), lap, atol=1e-9)


@pytest.mark.parametrize("op", EDGE_OPERATORS)
def test_numpy_and_torch_agree(rng, op):
    imgs = rng.integers(0, 256, (3, 20, 24, 3), dtype=np.uint8)
    t = edge_filter_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2), op).permute(0, 2, 3, 1).numpy()
    n = np.stack([edge_filter_numpy(i, op) for i in imgs])
    if op in ("kirsch", "laplacian"):
        np.testing.assert_array_equal(t, n)  # exact integer path
    else:
        assert np.abs(t.astype(int) - n).max() <= 1  # float32 vs float64 rounding at the uint8 floor


@settings(max_examples=40, deadline=None)
@given(value=st.integers(0, 255), h=st.integers(1, 12), w=st.integers(1, 12), op=st.sampled_from(EDGE_OPERATORS))
def test_constant_image_has_no_edges(value, h, w, op):
    img = np.full((h, w, 3), value, np.uint8)
    out = edge_filter_numpy(img, op)
    assert out.dtype == np.uint8 and not out.any()
    assert not edge_filter_torch(torch.from_numpy(img).permute(2, 0, 1)[None], op).any()


@settings(max_examples=30, deadline=None)
@given(img=images)
def test_kirsch_is_equivariant_to_90_degree_rotation(img):
    rotated_first = edge_filter_numpy(np.rot90(img), "kirsch")
    np.testing.assert_array_equal(rotated_first, np.rot90(edge_filter_numpy(img, "kirsch")))


@settings(max_examples=30, deadline=None)
@given(img=images)
def test_normalised_output_spans_full_range_unless_flat(img):
    out = edge_filter_numpy(img, "kirsch")
    raw = edge_filter_numpy(img, "kirsch", normalize="none")
    if raw.max() > raw.min():
        assert out.min() == 0 and out.max() == 255
    else:
        assert not out.any()


def test_step_edge_response_is_maximal_at_the_edge():
    img = np.zeros((9, 10), np.uint8)
    img[:, 5:] = 200
    raw = edge_filter_numpy(img, "kirsch", normalize="none")
    # dark side of the step: 3 cells at +5 see 200 → 15·200; bright side: 5·3·200 − 3·(3·200 + 2·200)… = 9·200
    assert (raw[:, 4] == 3000).all() and (raw[:, 5] == 1800).all()
    assert not raw[:, :4].any() and not raw[:, 6:].any()
    assert (edge_filter_numpy(img, "kirsch")[:, 4] == 255).all()


def test_zero_padding_invents_border_edges_replicate_does_not():
    img = np.full((8, 8), 100, np.uint8)
    assert edge_filter_numpy(img, "kirsch", padding="zero")[0].all()
    assert not edge_filter_numpy(img, "kirsch").any()


def test_channel_normalisation_and_transform_object(rng):
    img = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    img[..., 2] //= 4
    per_chan = edge_filter(img, "sobel", normalize="channel")
    assert all(per_chan[..., c].max() == 255 for c in range(3))
    tf = EdgeFilter("kirsch")
    assert "kirsch" in repr(tf)
    np.testing.assert_array_equal(tf(img), edge_filter_numpy(img, "kirsch"))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown edge operator"):
        edge_filter_numpy(np.zeros((4, 4)), "canny")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        edge_filter_numpy(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="B, C, H, W"):
        edge_filter_torch(torch.zeros(4, 4))


@pytest.mark.parametrize("padding", ["replicate", "reflect", "zero"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_torch_numpy_parity_across_padding_and_dtype(rng, padding, dtype):
    imgs = (rng.random((2, 9, 11, 3)) * (255 if dtype != np.uint16 else 60000)).astype(dtype)
    for op in ("kirsch", "laplacian", "sobel"):
        t = edge_filter_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2), op, padding=padding, normalize="none")
        n = np.stack([edge_filter_numpy(i, op, padding=padding, normalize="none") for i in imgs])
        np.testing.assert_allclose(t.permute(0, 2, 3, 1).numpy().astype(np.float64), n, rtol=1e-5, atol=1e-3)
