"""Overlay pictures written to disk: a captioned grid of :func:`medseg.ops.boundary.overlay_contours` tiles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medseg.utils.atomic import atomic_path


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
