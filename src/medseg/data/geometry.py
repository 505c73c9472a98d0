"""Model-input geometry and box prompts — the one module every path uses (training, prediction, evaluation,
export, benchmarks).

The LiteMedSAM / CVPR24 "letterbox": the longest side is resized to S (the other side to
``int(side · S / max(H, W) + 0.5)``, exactly as the challenge's inference script — not Python's banker's
``round``), pixels min-max normalised to [0, 1], the image placed top-left on a zero S×S canvas. Box
prompts move between frames the way that script moves them: original-frame xyxy boxes are scaled by
``S / max(H, W)`` and truncated to integers. The *prompt-free* box of an image is its own region on the canvas,
``[0, 0, w − 1, h − 1]`` (w, h = resized size), not the whole padded canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage


@dataclass(frozen=True)
class Letterbox:
    """Geometry of one letterboxed image.

    Attributes:
        orig_hw: (H, W) of the original image.
        new_hw: (h, w) of the resized image inside the S×S canvas (top-left aligned).
        size: canvas side S.
    """

    orig_hw: tuple[int, int]
    new_hw: tuple[int, int]
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.orig_hw)

    def prompt_free_box(self) -> np.ndarray:
        """The image region [0, 0, w-1, h-1] in the canvas frame (the prompt-free box), float32 (4,)."""
        return region_box(self.new_hw)

    def box_to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Original-frame xyxy boxes (..., 4) → canvas frame: ``int(box · S / max(H, W))`` (CVPR24 rule), float32."""
        return np.trunc(np.asarray(boxes, dtype=np.float64) * self.scale).astype(np.float32)


def region_box(hw: tuple[int, int]) -> np.ndarray:
    """The box [0, 0, w-1, h-1] of an (h, w) region at the top-left of a canvas, float32 (4,)."""
    h, w = hw
    return np.array([0, 0, w - 1, h - 1], dtype=np.float32)


def minmax_unit(image: np.ndarray) -> np.ndarray:
    """Per-image min-max to [0, 1] over all pixels and channels, float32 (a constant image becomes 0)."""
    img = np.asarray(image, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / max(hi - lo, 1e-8)


def letterbox_geometry(orig_hw: tuple[int, int], size: int) -> Letterbox:
    """Geometry for an (H, W) image on an S×S canvas (resized sides ``int(x · S / max(H, W) + 0.5)``)."""
    h, w = (int(v) for v in orig_hw)
    if h < 1 or w < 1 or size < 1:
        raise ValueError(f"need positive sizes, got image {orig_hw} and canvas {size}")
    scale = size / max(h, w)
    return Letterbox((h, w), (max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))), size)


def prompt_free_boxes(geos: Sequence[Letterbox]) -> np.ndarray:
    """(B, 4) float32 prompt-free boxes of letterboxed images (each image's own region on the canvas)."""
    return np.stack([g.prompt_free_box() for g in geos]) if geos else np.zeros((0, 4), np.float32)


def square_geometry(size: int) -> Letterbox:
    """Geometry of an image that already fills the S×S canvas (benchmarks, export checks)."""
    return letterbox_geometry((size, size), size)


def _resample(grow: bool) -> Image.Resampling:
    # area averaging when shrinking (OpenCV ``INTER_AREA`` as in LiteMedSAM), bilinear when enlarging
    return Image.Resampling.BILINEAR if grow else Image.Resampling.BOX


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 → (h, w, C), each axis with its own filter: area averaging on an axis that shrinks,
    bilinear on an axis that grows (one pass when both agree, else height first, then width)."""
    h, w = hw
    H, W = image.shape[:2]
    if (h, w) == (H, W):
        return image
    grow_h, grow_w = h > H, w > W
    if grow_h == grow_w or h == H or w == W:
        grow = grow_h if h != H else grow_w
        return np.asarray(Image.fromarray(image).resize((w, h), _resample(grow)))
    tall = np.asarray(Image.fromarray(image).resize((W, h), _resample(grow_h)))
    return np.asarray(Image.fromarray(tall).resize((w, h), _resample(grow_w)))


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool / label mask → (h, w) of the same dtype, nearest neighbour."""
    m = np.asarray(mask)
    h, w = hw
    if (h, w) == m.shape:
        return m
    src = m.astype(np.uint8) if m.dtype == bool else m.astype(np.int32)
    return np.asarray(Image.fromarray(src).resize((w, h), Image.Resampling.NEAREST)).astype(m.dtype)


def letterbox_image(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """(H, W, 3) uint8 → (3, S, S) float32 in [0, 1] and its :class:`Letterbox`.

    Min-max normalisation is per image over the resized pixels (constant images become 0).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    geo = letterbox_geometry(image.shape[:2], size)
    h, w = geo.new_hw
    img = minmax_unit(resize_image(image, geo.new_hw))
    canvas = np.zeros((3, size, size), dtype=np.float32)
    canvas[:, :h, :w] = img.transpose(2, 0, 1)
    return canvas, geo


def letterbox_mask(mask: np.ndarray, geo: Letterbox) -> np.ndarray:
    """(H, W) bool/label mask → (S, S) of the same dtype, nearest-neighbour resized and zero-padded."""
    h, w = geo.new_hw
    m = np.asarray(mask)
    if m.shape != geo.orig_hw:
        raise ValueError(f"mask shape {m.shape} differs from the image {geo.orig_hw}")
    m = resize_mask(m, geo.new_hw)
    out = np.zeros((geo.size, geo.size), dtype=m.dtype)
    out[:h, :w] = m
    return out


def unletterbox_logits(logits: torch.Tensor, geo: Letterbox) -> torch.Tensor:
    """(N, C, S, S) canvas logits → (N, C, H, W): crop the valid region, bilinear resize to the original size."""
    h, w = geo.new_hw
    crop = logits[..., :h, :w]
    if (h, w) == geo.orig_hw:
        return crop
    return F.interpolate(crop, size=geo.orig_hw, mode="bilinear", align_corners=False)


def boxes_from_mask(mask: np.ndarray, *, per_component: bool = True, min_area: int = 10,
                    shift: int = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Tight xyxy boxes around the foreground of an (H, W) mask (box prompts for evaluation and training).

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
