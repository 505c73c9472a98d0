"""Native-resolution inference: sliding windows over the image at its own size (MONAI's
``sliding_window_inference``, Gaussian blending of logits) and flip test-time augmentation.

Shape conventions: images (B, 3, H, W) float32 in [0, 1] (per-image min-max over the native pixels, the letterbox's
rule without the resize); logits (B, 1, H, W). An image smaller than a tile is zero-padded by MONAI (symmetrically)
and cropped back — never upscaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from medseg.data.geometry import minmax_unit
from medseg.models.adapters import Logits

FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
"""The TTA set: identity, horizontal, vertical, both (a flip is its own inverse)."""


def native_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (1, 3, H, W) float32, per-image min-max to [0, 1] (constant images become 0)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    return torch.from_numpy(np.ascontiguousarray(minmax_unit(image).transpose(2, 0, 1)))[None]


def flip_tta(fn: Logits, flips: Sequence[tuple[int, ...]] = FLIPS) -> Logits:
    """Test-time augmentation: the mean of ``flip⁻¹(fn(flip(x)))`` over ``flips`` (logits averaged)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in flips:
            out = fn(torch.flip(x, dims)) if dims else fn(x)
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        assert total is not None
        return total / len(flips)

    return run


def sliding_window_logits(fn: Logits, x: torch.Tensor, *, tile: int, overlap: float = 0.25, batch_size: int = 8,
                          mode: str = "gaussian") -> torch.Tensor:
    """Logits of (B, 3, H, W) ``x`` from ``tile``×``tile`` windows, ``overlap`` apart, ``batch_size`` windows per
    forward pass, blended with a Gaussian weight map (``mode="constant"`` averages); output (B, 1, H, W), exactly
    the input's size."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    out = sliding_window_inference(x, (tile, tile), batch_size, fn, overlap=overlap, mode=mode,
                                   padding_mode="constant", cval=0.0)
    return torch.as_tensor(out)
