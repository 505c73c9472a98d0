"""Mask overlays a person can read: contours of ground truth (green) and prediction (magenta)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medseg.metrics.surface import mask_boundary
from medseg.utils.atomic import atomic_path

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


def save_overlay_grid(tiles: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, columns: int = 4,
                      tile_size: int = 192) -> Path:
    """Save tiles (each (H, W, 3) uint8) in a captioned grid PNG."""
    rows = (len(tiles) + columns - 1) // columns
    cap_h = 16
    canvas = Image.new("RGB", (columns * tile_size, rows * (tile_size + cap_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (tile, cap) in enumerate(zip(tiles, captions, strict=True)):
        im = Image.fromarray(tile)
        im.thumbnail((tile_size, tile_size))
        x, y = (i % columns) * tile_size, (i // columns) * (tile_size + cap_h)
        canvas.paste(im, (x, y + cap_h))
        draw.text((x + 2, y + 2), cap[:32], fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
