"""Random views: shapes, range, determinism, and the laws of each augmentation."""

import pytest
import torch

from medseg.ssl.views import ViewOptions, crop_grids, random_view

PLAIN = dict(flip_p=0.0, jitter_p=0.0, grey_p=0.0, blur_p=0.0, solarize_p=0.0)


def _images(b: int = 3, s: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(0))


def test_a_view_has_the_asked_size_range_and_is_reproducible() -> None:
    x = _images()
    opts = ViewOptions(size=16)
    a = random_view(x, opts, torch.Generator().manual_seed(1))
    b = random_view(x, opts, torch.Generator().manual_seed(1))
    c = random_view(x, opts, torch.Generator().manual_seed(2))
    assert a.shape == (3, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_full_crop_without_other_changes_is_the_identity() -> None:
    x = _images()
    out = random_view(x, ViewOptions(scale=(1.0, 1.0), ratio=(1.0, 1.0), **PLAIN), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)


def test_flip_mirrors_and_grey_equalises_channels_and_solarize_inverts_bright_values() -> None:
    x = _images()
    g = torch.Generator().manual_seed(0)
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    flipped = random_view(x, ViewOptions(**full, **{**PLAIN, "flip_p": 1.0}), g)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    grey = random_view(x, ViewOptions(**full, **{**PLAIN, "grey_p": 1.0}), g)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    expected = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(grey[:, 0], expected, atol=1e-5)
    sol = random_view(x, ViewOptions(**full, **{**PLAIN, "solarize_p": 1.0}), g)
    assert torch.allclose(sol, torch.where(x > 0.5, 1 - x, x), atol=1e-5)


def test_blur_keeps_a_constant_image_constant() -> None:
    x = torch.full((2, 3, 24, 24), 0.3)
    out = random_view(x, ViewOptions(**{**PLAIN, "blur_p": 1.0}), torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)


def test_crops_stay_inside_the_region() -> None:
    """A region covering the left half: every sampling coordinate lies in x ∈ [-1, 0]."""
    regions = torch.tensor([[0.0, 0.0, 0.5, 1.0]] * 50)
    grid = crop_grids(50, 8, ViewOptions(), torch.Generator().manual_seed(0), regions)
    assert grid[..., 0].min() >= -1 - 1e-6 and grid[..., 0].max() <= 0 + 1e-6
    assert grid[..., 1].min() >= -1 - 1e-6 and grid[..., 1].max() <= 1 + 1e-6


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="probability"):
        ViewOptions(flip_p=1.5)
    with pytest.raises(ValueError, match="scale"):
        ViewOptions(scale=(0.5, 0.2))
