import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage as ndi

from medseg.metrics import hausdorff_distance, mask_boundary, normalized_surface_distance, surface_metrics
from tests.conftest import random_blob_mask


def _square(size: int, y0: int, x0: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_boundary_matches_scipy_erosion(rng):
    m = random_blob_mask(rng, 40, 3)
    m[0, :] = True  # touching the image border
    ref = m ^ ndi.binary_erosion(m)
    np.testing.assert_array_equal(mask_boundary(m), ref)


def test_hand_computed_shifted_squares():
    a, b = _square(30, 5, 5, 10), _square(30, 5, 8, 10)  # shifted 3 px right
    s = surface_metrics(a, b, tolerance=2.0)
    assert s.hd == pytest.approx(3.0)
    # 36 boundary px each. Farther than 2 px from the other boundary: a's whole left column (10 px, 3 px
    # from b's left column) and the 4 middle px of a's right column (3 px from b's right column, ≥ 3 px
    # from b's top/bottom rows); the same 14 px mirrored for b.
    assert s.nsd == pytest.approx((36 - 14 + 36 - 14) / 72)
    assert surface_metrics(a, b, tolerance=3.0).nsd == 1.0


def test_spacing_scales_distances():
    a, b = _square(30, 5, 5, 10), _square(30, 5, 8, 10)
    assert hausdorff_distance(a, b, spacing=(1.0, 0.5)) == pytest.approx(1.5)
    assert hausdorff_distance(a, b, spacing=(2.0, 1.0)) == pytest.approx(3.0)


def test_empty_rules():
    e = np.zeros((10, 20), bool)
    f = np.zeros((10, 20), bool)
    f[2:5, 2:5] = True
    assert surface_metrics(e, e) == (1.0, 0.0, 0.0)
    diag = float(np.hypot(10, 20))
    assert surface_metrics(e, f) == (0.0, pytest.approx(diag), pytest.approx(diag))
    assert surface_metrics(f, e, empty_distance=float("inf")).hd == float("inf")
    assert np.isnan(hausdorff_distance(f, e, percentile=95, empty_distance=float("nan")))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_self_distance_is_zero(seed):
    m = random_blob_mask(np.random.default_rng(seed), 32, 2)
    s = surface_metrics(m, m)
    assert s.nsd == 1.0 and s.hd == 0.0 and s.hd95 == 0.0


@pytest.mark.parametrize("spacing", [None, (1.0, 0.7)])
def test_matches_monai(rng, spacing):
    for _ in range(15):
        p, g = random_blob_mask(rng, 64, 3), random_blob_mask(rng, 64, 3)
        P, G = torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float()
        ref_nsd = compute_surface_dice(P, G, [2.0], spacing=spacing).item()
        ref_hd95 = compute_hausdorff_distance(P, G, percentile=95, spacing=spacing).item()
        ref_hd = compute_hausdorff_distance(P, G, spacing=spacing).item()
        s = surface_metrics(p, g, tolerance=2.0, spacing=spacing)
        # MONAI returns float32: compare to float32 precision
        assert s.nsd == pytest.approx(ref_nsd, rel=1e-6, abs=1e-7)
        assert s.hd95 == pytest.approx(ref_hd95, rel=1e-6)
        assert s.hd == pytest.approx(ref_hd, rel=1e-6)
        assert normalized_surface_distance(p, g, spacing=spacing) == s.nsd


def test_bad_spacing():
    with pytest.raises(ValueError, match="spacing"):
        surface_metrics(np.ones((3, 3)), np.ones((3, 3)), spacing=(1.0, 0.0))


def _disc(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


NSD_CASES = [
    (_disc(64, 30, 30, 14), _disc(64, 30, 33, 14)),
    (_disc(64, 30, 30, 14), _disc(64, 34, 36, 11)),
    (_square(40, 0, 0, 12), _square(40, 1, 2, 12)),  # touching the image border
]


@pytest.mark.parametrize("case", range(len(NSD_CASES)))
@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3)])
def test_subpixel_nsd_matches_monai_use_subvoxels(case, spacing):
    a, b = NSD_CASES[case]
    ref = compute_surface_dice(torch.from_numpy(a)[None, None].float(), torch.from_numpy(b)[None, None].float(),
                               [2.0], include_background=True, spacing=list(spacing), use_subvoxels=True)
    got = surface_metrics(a, b, tolerance=2.0, spacing=spacing, nsd_mode="subpixel").nsd
    assert got == pytest.approx(float(ref), abs=1e-6)


@pytest.mark.parametrize("case", range(len(NSD_CASES)))
def test_cvpr24_nsd_matches_monai_on_the_challenges_depth_one_volume(case):
    a, b = NSD_CASES[case]
    # the challenge expands a 2-D case to (H, W, 1) at spacing (1, 1, 1) and runs 3-D surface distances
    ref = compute_surface_dice(torch.from_numpy(a)[None, None, ..., None].float(),
                               torch.from_numpy(b)[None, None, ..., None].float(), [2.0],
                               include_background=True, spacing=[1.0, 1.0, 1.0], use_subvoxels=True)
    got = surface_metrics(a, b, tolerance=2.0, nsd_mode="cvpr24").nsd
    assert got == pytest.approx(float(ref), abs=1e-6)


def test_nsd_modes_differ_and_agree_on_identity():
    a, b = NSD_CASES[1]
    modes = {m: surface_metrics(a, b, nsd_mode=m).nsd for m in ("boundary", "subpixel", "cvpr24")}
    assert len({round(v, 4) for v in modes.values()}) == 3
    for m in modes:
        assert surface_metrics(a, a, nsd_mode=m).nsd == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nsd_mode"):
        surface_metrics(a, b, nsd_mode="banana")


def test_leaderboard_mode_uses_the_challenge_nsd():
    from medseg.metrics import MetricConfig, compute_metrics

    a, b = NSD_CASES[0]
    board = compute_metrics(a, b, config=MetricConfig(leaderboard=True))
    assert board["nsd"] == pytest.approx(surface_metrics(a, b, nsd_mode="cvpr24").nsd)
    assert compute_metrics(a, b)["nsd"] == pytest.approx(surface_metrics(a, b).nsd)
