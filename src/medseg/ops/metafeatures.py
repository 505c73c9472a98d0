"""Image meta-features for CMMC meta-routing: std and Shannon entropy (the paper's pair), plus mean
gradient magnitude, edge density and contrast.

Conventions (from the CMMC code where it had one, see ``shared/notes`` §1.5):

* ``std`` — population standard deviation of all pixel values, all channels pooled, on the raw uint8 scale
  (0–255);
* ``entropy`` — Shannon entropy in bits of the 256-bin histogram of all pixel values (channels pooled);
  0 for a constant image, 8 at most;
* ``gradient`` — mean Sobel gradient magnitude of the BT.601 grey image scaled to [0, 1], Sobel divided by
  8 so that it estimates the per-pixel derivative (a unit step gives 0.5 on its two edge pixels);
* ``edge_density`` — fraction of pixels whose gradient (as above) exceeds ``edge_threshold`` (0.1);
* ``contrast`` — Michelson contrast of the grey image from robust extremes, ``(p99 − p1) / (p99 + p1)``
  (0 when both are 0).
"""

from __future__ import annotations

import numpy as np
import torch

from medseg.ops.color import to_gray, to_gray_torch
from medseg.ops.edges import edge_filter_numpy, edge_filter_torch
from medseg.ops.histogram import histogram256, histogram256_torch

FEATURE_NAMES: tuple[str, ...] = ("std", "entropy", "gradient", "edge_density", "contrast")


def _entropy_from_hist(hist: np.ndarray) -> float:
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else 0.0


def image_entropy(image: np.ndarray) -> float:
    """Shannon entropy (bits) of the 256-bin histogram of a uint8 image, channels pooled."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image_entropy expects uint8, got {arr.dtype}")
    return _entropy_from_hist(histogram256(arr))


def meta_features(image: np.ndarray, edge_threshold: float = 0.1) -> dict[str, float]:
    """All meta-features of one image.

    Args:
        image: (H, W) or (H, W, 3) uint8.
        edge_threshold: gradient level counted as an edge for ``edge_density``.

    Returns:
        dict with the keys of :data:`FEATURE_NAMES`, float values.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"meta_features expects uint8, got {arr.dtype}")
    gray = to_gray(arr).astype(np.float64) / 255.0
    grad = edge_filter_numpy(gray, "sobel", normalize="none") / 8.0
    p1, p99 = np.percentile(gray, [1, 99])
    return {
        "std": float(arr.std(dtype=np.float64)),
        "entropy": image_entropy(arr),
        "gradient": float(grad.mean()),
        "edge_density": float((grad > edge_threshold).mean()),
        "contrast": float((p99 - p1) / (p99 + p1)) if p99 + p1 > 0 else 0.0,
    }


def meta_features_torch(images: torch.Tensor, edge_threshold: float = 0.1) -> dict[str, torch.Tensor]:
    """Batched :func:`meta_features` on (B, C, H, W) uint8 → dict of (B,) float64 tensors."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected (B, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    b = images.shape[0]
    hist = histogram256_torch(images)
    p = hist / hist.sum(1, keepdim=True)
    entropy = -(torch.where(p > 0, p * torch.log2(p.clamp_min(1e-300)), torch.zeros_like(p))).sum(1)
    values = images.reshape(b, -1).double()
    std = values.std(1, correction=0)
    gray = to_gray_torch(images).double() / 255.0
    grad = edge_filter_torch(gray[:, None], "sobel", normalize="none")[:, 0] / 8.0
    q = torch.quantile(gray.reshape(b, -1), torch.tensor([0.01, 0.99], dtype=torch.float64, device=images.device),
                       dim=1)
    denom = q[1] + q[0]
    contrast = torch.where(denom > 0, (q[1] - q[0]) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return {
        "std": std,
        "entropy": entropy,
        "gradient": grad.flatten(1).mean(1),
        "edge_density": (grad > edge_threshold).flatten(1).double().mean(1),
        "contrast": contrast,
    }
