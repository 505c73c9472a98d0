"""Model-input geometry: the LiteMedSAM "letterbox" (longest side → S, min-max to [0, 1], zero-pad bottom/right)
and its inverse for logits. One implementation used by training, prediction, evaluation and export."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


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

    def valid_box(self) -> np.ndarray:
        """The whole-image box [0, 0, w-1, h-1] in the canvas frame (the prompt-free box), float32 (4,)."""
        h, w = self.new_hw
        return np.array([0, 0, w - 1, h - 1], dtype=np.float32)

    def box_to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Original-frame xyxy boxes (..., 4) → canvas frame (LiteMedSAM: ``box / max(H, W) * S``)."""
        return np.asarray(boxes, dtype=np.float32) * self.scale


def resize_image(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 → (h, w, 3): area averaging when shrinking (OpenCV ``INTER_AREA``), bilinear when enlarging."""
    h, w = hw
    if (h, w) == image.shape[:2]:
        return image
    resample = Image.Resampling.BOX if h < image.shape[0] else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((w, h), resample))


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool / label mask → (h, w) of the same dtype, nearest neighbour."""
    m = np.asarray(mask)
    h, w = hw
    if (h, w) == m.shape:
        return m
    src = m.astype(np.uint8) if m.dtype == bool else m.astype(np.int32)
    return np.asarray(Image.fromarray(src).resize((w, h), Image.Resampling.NEAREST)).astype(m.dtype)


def letterbox_geometry(orig_hw: tuple[int, int], size: int) -> Letterbox:
    """Geometry for an (H, W) image on an S×S canvas."""
    h, w = orig_hw
    scale = size / max(h, w)
    return Letterbox((h, w), (max(1, round(h * scale)), max(1, round(w * scale))), size)


def letterbox_image(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """(H, W, 3) uint8 → (3, S, S) float32 in [0, 1] and its :class:`Letterbox`.

    Resizing uses area averaging when shrinking (OpenCV ``INTER_AREA`` as in LiteMedSAM) and bilinear when
    enlarging; min-max normalisation is per image over the resized pixels (constant images become 0).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    geo = letterbox_geometry(image.shape[:2], size)
    h, w = geo.new_hw
    img = resize_image(image, geo.new_hw).astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / max(hi - lo, 1e-8)
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
