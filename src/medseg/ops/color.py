"""Colour conversion shared by every operator that needs a single grey channel."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

GrayFormula = Literal["bt601", "bt709", "mean"]

#: Luma weights (R, G, B). ``bt601`` = OpenCV ``COLOR_RGB2GRAY``; ``bt709`` = scikit-image ``rgb2gray``.
GRAY_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "bt601": (0.299, 0.587, 0.114),
    "bt709": (0.2125, 0.7154, 0.0721),
    "mean": (1 / 3, 1 / 3, 1 / 3),
}


def to_gray(image: np.ndarray, formula: GrayFormula = "bt601") -> np.ndarray:
    """Grey image, rounded to uint8 when the input is uint8.

    Args:
        image: (H, W) or (H, W, 3|4) array; an alpha channel is ignored.
        formula: luma weights, see :data:`GRAY_WEIGHTS` (default BT.601, as OpenCV).

    Returns:
        (H, W) array; uint8 for uint8 input (rounded half up, as OpenCV), float64 otherwise.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    if arr.shape[-1] == 1:
        return arr[..., 0]
    grey = arr[..., :3].astype(np.float64) @ np.asarray(GRAY_WEIGHTS[formula])
    if arr.dtype == np.uint8:
        return np.clip(np.floor(grey + 0.5), 0, 255).astype(np.uint8)
    return grey


def to_gray_torch(images: torch.Tensor, formula: GrayFormula = "bt601") -> torch.Tensor:
    """Batched :func:`to_gray`: (B, C, H, W) → (B, H, W); uint8 in, uint8 out (same rounding)."""
    if images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] == 1:
        return images[:, 0]
    w = torch.tensor(GRAY_WEIGHTS[formula], dtype=torch.float64, device=images.device)
    grey = torch.einsum("bchw,c->bhw", images[:, :3].double(), w)
    if images.dtype == torch.uint8:
        return torch.floor(grey + 0.5).clamp_(0, 255).to(torch.uint8)
    return grey
