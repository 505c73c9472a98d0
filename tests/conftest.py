"""Shared fixtures. Real-data tests use ``../shared/data`` and skip with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

requires_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "README.md").is_file(),
    reason=f"real benchmark data not found at {SHARED_DATA} (only present next to the medseg checkout)",
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_blob_mask(rng: np.random.Generator, size: int = 64, n: int = 2) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    m = np.zeros((size, size), bool)
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(3, size / 3, 2)
        m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return m


SHARED_WEIGHTS = SHARED / "weights" / "lite_medsam.pth"
requires_shared_weights = pytest.mark.skipif(
    not SHARED_WEIGHTS.is_file(),
    reason=f"LiteMedSAM checkpoint not found at {SHARED_WEIGHTS} (only present next to the medseg checkout)",
)


def tiny_model_config(name: str, img_size: int = 64) -> dict:
    """Test-scale builder options for a registered model."""
    from medseg.models import TINY_CONFIGS, sized_options

    return sized_options(name, img_size, TINY_CONFIGS[name])
