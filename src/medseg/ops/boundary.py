"""Mask boundaries and contour overlays: pure array operators (no I/O)."""

from __future__ import annotations

import numpy as np


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels: the mask minus its cross-shaped erosion (outside = background).

    Shape: (H, W) or (D, H, W) any dtype (non-zero = foreground) → same shape, bool.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    p = np.pad(m, 1)
    core = (slice(1, -1),) * m.ndim
    interior = p[core].copy()
    for axis in range(m.ndim):
        for shift in (slice(None, -2), slice(2, None)):
            sl = list(core)
            sl[axis] = shift
            interior &= p[tuple(sl)]
    return m & ~interior


GT_COLOUR = (0, 230, 0)
PRED_COLOUR = (255, 0, 255)


def overlay_contours(image: np.ndarray, gt: np.ndarray | None = None, pred: np.ndarray | None = None,
                     alpha: float = 0.25) -> np.ndarray:
    """Draw mask contours (and a light fill of the prediction) on an image.

    Args:
        image: (H, W, 3) uint8.
        gt, pred: (H, W) masks (non-zero = foreground) or ``None``.
        alpha: opacity of the prediction fill.

    Returns:
        (H, W, 3) uint8.
    """
    out = image.astype(np.float64).copy()
    if pred is not None:
        p = np.asarray(pred) > 0
        out[p] = (1 - alpha) * out[p] + alpha * np.array(PRED_COLOUR)
        out[mask_boundary(p)] = PRED_COLOUR
    if gt is not None:
        out[mask_boundary(np.asarray(gt) > 0)] = GT_COLOUR
    return out.astype(np.uint8)
