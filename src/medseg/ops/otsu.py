"""Otsu thresholding and the MedSASS pseudo-mask (NumPy and batched torch).

Conventions (MedSASS leaves them open; see the README):

* grey = BT.601 luma of the uint8 RGB image (:func:`medseg.ops.color.to_gray`);
* threshold ``t`` from the 256-bin histogram (identical to ``skimage.filters.threshold_otsu`` on uint8);
  foreground of polarity ``bright`` is ``grey > t``, of ``dark`` is ``grey <= t``;
* ``auto`` polarity picks the class that touches the image border less (ties: the smaller class) —
  lesions, nuclei and lung fields are objects inside the frame, whatever their brightness;
* a constant image has no threshold: its pseudo-mask is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy import ndimage as ndi

from medseg.ops.color import GrayFormula, to_gray, to_gray_torch
from medseg.ops.histogram import histogram256, histogram256_torch

Polarity = Literal["bright", "dark", "auto"]


def _otsu_from_histograms(hist: torch.Tensor) -> torch.Tensor:
    """Otsu threshold per row of a (B, 256) histogram; returns (B,) int64 grey levels."""
    hist = hist.double()
    levels = torch.arange(hist.shape[1], dtype=torch.float64, device=hist.device)
    w0 = hist.cumsum(1)
    w1 = hist.flip(1).cumsum(1).flip(1)
    m0 = (hist * levels).cumsum(1) / w0.clamp_min(1e-300)
    m1 = (hist * levels).flip(1).cumsum(1).flip(1) / w1.clamp_min(1e-300)
    between = w0[:, :-1] * w1[:, 1:] * (m0[:, :-1] - m1[:, 1:]) ** 2
    return between.argmax(1)


def otsu_threshold(gray: np.ndarray) -> int:
    """Otsu threshold of a uint8 grey image; foreground (bright) = ``gray > t``.

    Args:
        gray: (H, W) uint8.

    Returns:
        ``t`` in 0..254, equal to ``skimage.filters.threshold_otsu(gray)``; for a constant image the
        constant value (so that ``gray > t`` is empty).
    """
    arr = np.asarray(gray)
    if arr.dtype != np.uint8:
        raise ValueError(f"otsu_threshold expects uint8 grey values, got {arr.dtype}")
    if arr.size and arr.min() == arr.max():
        return int(arr.flat[0])
    hist = torch.from_numpy(histogram256(arr)[None])
    return int(_otsu_from_histograms(hist)[0])


def otsu_threshold_torch(gray: torch.Tensor) -> torch.Tensor:
    """Batched :func:`otsu_threshold`: (B, H, W) uint8 → (B,) int64."""
    if gray.dtype != torch.uint8 or gray.ndim != 3:
        raise ValueError(f"expected (B, H, W) uint8, got {tuple(gray.shape)} {gray.dtype}")
    t = _otsu_from_histograms(histogram256_torch(gray))
    flat = gray.reshape(gray.shape[0], -1).long()
    lo, hi = flat.amin(1), flat.amax(1)
    return torch.where(lo == hi, lo, t)


def _border_fraction(mask: np.ndarray) -> float:
    border = np.concatenate([mask[0], mask[-1], mask[1:-1, 0], mask[1:-1, -1]])
    return float(border.mean()) if border.size else 0.0


def _choose_polarity(bright: np.ndarray) -> bool:
    """True if the bright class is the object: it touches the border less (tie: it is smaller)."""
    fb, fd = _border_fraction(bright), _border_fraction(~bright)
    if fb != fd:
        return fb < fd
    return bright.mean() <= 0.5


@dataclass(frozen=True)
class Cleanup:
    """Optional morphological clean-up of a pseudo-mask.

    Args:
        min_size: remove 8-connected foreground components with fewer pixels (0 = keep all).
        fill_holes: fill background holes fully enclosed by foreground.
        opening_radius: binary opening with a disk of this radius (0 = none).
    """

    min_size: int = 0
    fill_holes: bool = False
    opening_radius: int = 0

    def __call__(self, mask: np.ndarray) -> np.ndarray:
        out = mask.astype(bool)
        if self.opening_radius > 0:
            r = self.opening_radius
            yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
            out = ndi.binary_opening(out, structure=(yy * yy + xx * xx) <= r * r)
        if self.fill_holes:
            out = ndi.binary_fill_holes(out)
        if self.min_size > 0:
            labels, n = ndi.label(out, structure=np.ones((3, 3), bool))
            if n:
                sizes = np.bincount(labels.ravel())
                keep = sizes >= self.min_size
                keep[0] = False
                out = keep[labels]
        return out


def otsu_pseudo_mask(
    image: np.ndarray,
    polarity: Polarity = "auto",
    *,
    gray_formula: GrayFormula = "bt601",
    cleanup: Cleanup | None = None,
) -> np.ndarray:
    """MedSASS pseudo-mask of one image.

    Args:
        image: (H, W) or (H, W, 3) uint8.
        polarity: ``bright`` | ``dark`` | ``auto`` (see module docstring).
        gray_formula: luma weights for RGB input.
        cleanup: optional :class:`Cleanup`.

    Returns:
        (H, W) bool mask.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"otsu_pseudo_mask expects a uint8 image, got {arr.dtype}")
    gray = to_gray(arr, gray_formula)
    bright = gray > otsu_threshold(gray)
    if polarity == "bright":
        mask = bright
    elif polarity == "dark":
        mask = ~bright if bright.any() else bright
    elif polarity == "auto":
        mask = bright if (not bright.any() or _choose_polarity(bright)) else ~bright
    else:
        raise ValueError(f"unknown polarity {polarity!r}; choose bright, dark or auto")
    return cleanup(mask) if cleanup is not None else mask


def otsu_pseudo_mask_torch(
    images: torch.Tensor,
    polarity: Polarity = "auto",
    *,
    gray_formula: GrayFormula = "bt601",
    cleanup: Cleanup | None = None,
) -> torch.Tensor:
    """Batched :func:`otsu_pseudo_mask` on (B, C, H, W) uint8 → (B, H, W) bool, same device.

    Thresholds and polarity are computed on the tensor's device; the optional clean-up runs per image
    through SciPy on the CPU.
    """
    gray = to_gray_torch(images, gray_formula)
    t = otsu_threshold_torch(gray)
    bright = gray > t[:, None, None]
    nonempty = bright.flatten(1).any(1)
    if polarity == "bright":
        keep_bright = torch.ones_like(nonempty)
    elif polarity == "dark":
        keep_bright = ~nonempty
    elif polarity == "auto":
        border = torch.cat([bright[:, 0], bright[:, -1], bright[:, 1:-1, 0], bright[:, 1:-1, -1]], dim=1).double()
        fb, fd = border.mean(1), 1.0 - border.mean(1)
        smaller = bright.flatten(1).double().mean(1) <= 0.5
        keep_bright = torch.where(fb != fd, fb < fd, smaller) | ~nonempty
    else:
        raise ValueError(f"unknown polarity {polarity!r}; choose bright, dark or auto")
    masks = torch.where(keep_bright[:, None, None], bright, ~bright)
    if cleanup is not None:
        cleaned = [torch.from_numpy(cleanup(m.cpu().numpy())) for m in masks]
        masks = torch.stack(cleaned).to(images.device)
    return masks


class OtsuPseudoMask:
    """Composable transform: ``OtsuPseudoMask(polarity="auto")(image) -> mask`` (NumPy or torch batch)."""

    def __init__(self, polarity: Polarity = "auto", *, gray_formula: GrayFormula = "bt601",
                 cleanup: Cleanup | None = None) -> None:
        self.polarity = polarity
        self.gray_formula = gray_formula
        self.cleanup = cleanup

    def __call__(self, image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(image, torch.Tensor):
            return otsu_pseudo_mask_torch(image, self.polarity, gray_formula=self.gray_formula, cleanup=self.cleanup)
        return otsu_pseudo_mask(image, self.polarity, gray_formula=self.gray_formula, cleanup=self.cleanup)
