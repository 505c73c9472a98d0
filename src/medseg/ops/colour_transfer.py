"""Colour transfer to reference statistics (Reinhard, Ashikhmin, Gooch & Shirley, "Color transfer between images",
IEEE CG&A 2001): each CIELAB channel of an image's foreground is shifted and scaled to a reference mean and standard
deviation, e.g. those of a model's training images, so an image from another camera reaches the model with the
colour balance it was trained on. Training-free: a test-time input normalisation.

With several references (one per training dataset, i.e. per camera), :func:`transfer_to_nearest` moves an image to
the reference closest to its own statistics: an image of a known camera then stays nearly as it is, and one of an
unknown camera goes to the known camera it resembles most, instead of to an average of cameras that matches none.

The foreground is every pixel whose brightest channel exceeds ``threshold`` (fundus and dermoscopy photographs sit
in a black field that would otherwise dominate the statistics); the rest is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ColourStats:
    """Per-channel mean and standard deviation of an image's foreground in OpenCV's 8-bit CIELAB (each channel
    0–255)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> ColourStats:
        return cls(tuple(float(x) for x in d["mean"]), tuple(float(x) for x in d["std"]))  # type: ignore[arg-type]


def _lab_foreground(image: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float64)
    return lab, image.max(axis=2) > threshold


def colour_stats(image: np.ndarray, threshold: int = 10) -> ColourStats:
    """The CIELAB statistics of ``image``'s foreground ((H, W, 3) uint8 RGB); the whole image if no pixel exceeds
    ``threshold``."""
    lab, fg = _lab_foreground(image, threshold)
    px = lab[fg] if fg.any() else lab.reshape(-1, 3)
    return ColourStats(tuple(px.mean(0)), tuple(px.std(0)))  # type: ignore[arg-type]


def reference_stats(images: Iterable[np.ndarray], threshold: int = 10) -> ColourStats:
    """The mean of the images' :func:`colour_stats` (each image weighs the same, whatever its size)."""
    stats = [colour_stats(img, threshold) for img in images]
    if not stats:
        raise ValueError("reference_stats needs at least one image")
    return ColourStats(tuple(np.mean([s.mean for s in stats], 0)), tuple(np.mean([s.std for s in stats], 0)))  # type: ignore[arg-type]


def transfer_colour(image: np.ndarray, target: ColourStats, threshold: int = 10) -> np.ndarray:
    """``image`` ((H, W, 3) uint8 RGB) with its foreground's CIELAB channels moved to ``target``'s mean and
    standard deviation (a channel with no spread is only shifted); background pixels unchanged. Returns (H, W, 3)
    uint8 RGB."""
    lab, fg = _lab_foreground(image, threshold)
    if not fg.any():
        return image.copy()
    px = lab[fg]
    mu, sd = px.mean(0), px.std(0)
    scale = np.where(sd > 1e-6, np.asarray(target.std) / np.maximum(sd, 1e-6), 1.0)
    lab[fg] = (px - mu) * scale + np.asarray(target.mean)
    out = cv2.cvtColor(np.clip(np.rint(lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    out[~fg] = image[~fg]
    return out


def nearest_reference(stats: ColourStats, references: dict[str, ColourStats]) -> str:
    """The name of the reference whose (mean, std) is closest to ``stats`` (Euclidean, the six numbers)."""
    if not references:
        raise ValueError("nearest_reference needs at least one reference")
    here = np.r_[stats.mean, stats.std]
    return min(references, key=lambda k: float(np.linalg.norm(np.r_[references[k].mean, references[k].std] - here)))


def transfer_to_nearest(image: np.ndarray, references: dict[str, ColourStats], threshold: int = 10) -> np.ndarray:
    """:func:`transfer_colour` to the :func:`nearest_reference` of ``image``'s own statistics."""
    return transfer_colour(image, references[nearest_reference(colour_stats(image, threshold), references)],
                           threshold)
