import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import entropy as scipy_entropy

from medseg.ops import FEATURE_NAMES, image_entropy, meta_features, meta_features_torch


def test_entropy_matches_scipy(rng):
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    hist = np.histogram(img, bins=256, range=(0, 256))[0]
    assert image_entropy(img) == pytest.approx(scipy_entropy(hist, base=2), abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 255))
def test_constant_image_has_zero_entropy_std_and_edges(v):
    f = meta_features(np.full((9, 9, 3), v, np.uint8))
    assert f["entropy"] == 0 and f["std"] == 0 and f["gradient"] == 0 and f["edge_density"] == 0
    assert f["contrast"] == 0


def test_uniform_histogram_has_eight_bits():
    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert image_entropy(img) == pytest.approx(8.0)


def test_two_level_image():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, 5:] = 100
    f = meta_features(img)
    assert f["std"] == pytest.approx(50.0)
    assert f["entropy"] == pytest.approx(1.0)
    assert f["edge_density"] == pytest.approx(0.2)  # two edge columns of ten
    assert f["contrast"] == pytest.approx(1.0)


def test_torch_matches_numpy(rng):
    imgs = rng.integers(0, 256, (4, 16, 18, 3), dtype=np.uint8)
    imgs[1] = 17
    t = meta_features_torch(torch.from_numpy(imgs).permute(0, 3, 1, 2))
    for i, img in enumerate(imgs):
        n = meta_features(img)
        for k in FEATURE_NAMES:
            assert float(t[k][i]) == pytest.approx(n[k], abs=1e-9), k
