"""Box prompts from ground-truth masks (for box-prompted evaluation and SAM-family training)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def boxes_from_mask(mask: np.ndarray, *, per_component: bool = True, min_area: int = 10,
                    shift: int = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Tight xyxy boxes around the foreground of an (H, W) mask.

    Args:
        mask: (H, W) bool / label map (non-zero = foreground).
        per_component: one box per 8-connected component (CVPR24-style one box per object); otherwise one box
            around all foreground.
        min_area: components smaller than this many pixels get no box (unless nothing else is left).
        shift: maximal random enlargement of each side in pixels (LiteMedSAM training: 5), clipped to the image.
        rng: generator for ``shift``.

    Returns:
        (K, 4) float32 [x0, y0, x1, y1] in pixel indices (inclusive); K = 0 for an empty mask.
    """
    fg = np.asarray(mask) != 0
    if not fg.any():
        return np.zeros((0, 4), dtype=np.float32)
    if per_component:
        lab, n = ndimage.label(fg, structure=np.ones((3, 3)))
        slices = ndimage.find_objects(lab)
        areas = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
        keep = [s for s, a in zip(slices, areas, strict=True) if a >= min_area] or [slices[int(np.argmax(areas))]]
    else:
        ys, xs = np.nonzero(fg)
        keep = [(slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))]
    boxes = np.array([[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in keep], dtype=np.float32)
    if shift > 0:
        rng = rng if rng is not None else np.random.default_rng()
        h, w = fg.shape
        d = rng.integers(0, shift + 1, size=boxes.shape)
        boxes = boxes + d * np.array([-1, -1, 1, 1])
        boxes = np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)
    return boxes
