"""The 256-bin grey-level histogram used by Otsu and the entropy meta-feature."""

from __future__ import annotations

import numpy as np
import torch


def histogram256(values: np.ndarray) -> np.ndarray:
    """Counts of each value 0..255 in a uint8 array (all elements pooled). Returns (256,) float64."""
    if values.dtype != np.uint8:
        raise ValueError(f"expected uint8 values, got {values.dtype}")
    return np.bincount(values.ravel(), minlength=256).astype(np.float64)


def histogram256_torch(values: torch.Tensor) -> torch.Tensor:
    """Per-item counts of 0..255: (B, ...) uint8 → (B, 256) float64, on the input's device."""
    if values.dtype != torch.uint8:
        raise ValueError(f"expected uint8 values, got {values.dtype}")
    flat = values.reshape(values.shape[0], -1).long()
    hist = torch.zeros(values.shape[0], 256, dtype=torch.float64, device=values.device)
    return hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
