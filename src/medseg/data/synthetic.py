"""Deterministic synthetic phantoms with masks that look like six modalities, for tests and the demo.

Each generator takes a ``numpy.random.Generator`` and a size and returns ``(image (H, W, 3) uint8,
mask (H, W) bool)``. The same seed always gives the same images, on any machine.

=============  =====================================  ===================================
modality       image                                  mask
=============  =====================================  ===================================
microscopy     bright nuclei on a dark background      nuclei
fundus         orange retina disc, optic disc          branching vessel tree
dermoscopy     skin texture, hairs                     one irregular pigmented lesion
xray           chest: body, spine, ribs                two lung fields
endoscopy      pink mucosa with folds, highlights      one polyp
ultrasound     speckled sector scan                    one hypo-echoic cyst
=============  =====================================  ===================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from medseg.utils.atomic import atomic_path

Phantom = tuple[np.ndarray, np.ndarray]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return yy / size, xx / size


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0):
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u, v = (dx * c + dy * s) / rx, (-dx * s + dy * c) / ry
    return u * u + v * v <= 1.0


def _blob(yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator, cy: float, cx: float, r: float,
          wobble: float = 0.25) -> np.ndarray:
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(theta, r)
    for k in range(2, 6):
        radius += r * wobble / k * rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) <= radius


def _finish(rgb: np.ndarray, rng: np.random.Generator, noise: float, blur: float = 0.0) -> np.ndarray:
    if blur > 0:
        rgb = ndi.gaussian_filter(rgb, sigma=(blur, blur, 0))
    rgb = rgb + rng.normal(0, noise, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def nuclei(rng: np.random.Generator, size: int = 128) -> Phantom:
    yy, xx = _grid(size)
    mask = np.zeros((size, size), bool)
    level = np.zeros((size, size))
    for _ in range(int(rng.integers(6, 20))):
        r = rng.uniform(0.03, 0.07)
        m = _ellipse(yy, xx, rng.uniform(0.08, 0.92), rng.uniform(0.08, 0.92), r, r * rng.uniform(0.6, 1.0),
                     rng.uniform(0, np.pi))
        mask |= m
        level[m] = rng.uniform(0.55, 1.0)
    tint = np.array([0.6, 0.55, 0.95]) * 230
    rgb = 15 + ndi.gaussian_filter(level, 1.0)[..., None] * tint
    return _finish(rgb, rng, 6.0), mask


def vessels(rng: np.random.Generator, size: int = 128) -> Phantom:
    yy, xx = _grid(size)
    fov = np.hypot(yy - 0.5, xx - 0.5) <= 0.47
    disc_y, disc_x = 0.5 + rng.uniform(-0.08, 0.08), rng.choice([0.3, 0.7])
    centre = np.zeros((size, size), bool)
    thick = np.zeros((size, size), bool)
    segments: list[tuple[float, float, float, int]] = [(disc_y, disc_x, a, 0) for a in rng.uniform(0, 2 * np.pi, 4)]
    while segments:
        y, x, a, level = segments.pop()
        length = rng.uniform(0.12, 0.25) / (1 + 0.4 * level)
        steps = max(2, int(length * size))
        for t in range(steps):
            a += rng.normal(0, 0.08)
            y, x = y + np.sin(a) / size, x + np.cos(a) / size
            iy, ix = int(y * size), int(x * size)
            if not (0 <= iy < size and 0 <= ix < size):
                break
            (thick if level == 0 else centre)[iy, ix] = True
            if t == steps - 1 and level < 3:
                segments += [(y, x, a + s * rng.uniform(0.3, 0.7), level + 1) for s in (-1, 1)]
    mask = (ndi.binary_dilation(thick, iterations=2) | ndi.binary_dilation(centre)) & fov
    base = np.stack([200 - 60 * np.hypot(yy - 0.5, xx - 0.5), 90 + 0 * yy, 40 + 0 * yy], -1)
    base += 60 * np.exp(-((yy - disc_y) ** 2 + (xx - disc_x) ** 2) / 0.004)[..., None]
    base[mask] *= np.array([0.55, 0.45, 0.5])
    base[~fov] = 0
    return _finish(base, rng, 4.0, blur=0.7), mask


def skin_lesion(rng: np.random.Generator, size: int = 128) -> Phantom:
    yy, xx = _grid(size)
    mask = _blob(yy, xx, rng, rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.15, 0.28))
    skin = np.array([215.0, 165, 140]) * rng.uniform(0.9, 1.05)
    rgb = np.broadcast_to(skin, (size, size, 3)).copy()
    rgb *= (1 + 0.06 * ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 2))[..., None]
    lesion = np.array([110.0, 65, 45]) * (1 + 0.15 * ndi.gaussian_filter(rng.normal(0, 1, (size, size)), 3))[..., None]
    soft = ndi.gaussian_filter(mask.astype(float), 1.0)[..., None]
    rgb = rgb * (1 - soft) + lesion * soft
    for _ in range(int(rng.integers(0, 4))):  # hairs: dark curves, not part of the lesion
        y0, a = rng.uniform(0, 1), rng.uniform(-0.5, 0.5)
        hair = np.abs(yy - (y0 + a * xx + 0.05 * np.sin(6 * xx))) < 0.006
        rgb[hair] = 40
    rgb *= (1 - 0.35 * np.hypot(yy - 0.5, xx - 0.5) ** 2)[..., None]  # vignetting
    return _finish(rgb, rng, 3.0, blur=0.5), mask


def lung_fields(rng: np.random.Generator, size: int = 128) -> Phantom:
    yy, xx = _grid(size)
    body = _ellipse(yy, xx, 0.55, 0.5, 0.5, 0.42)
    grey = np.where(body, 170.0, 20.0)
    mask = np.zeros((size, size), bool)
    for side in (-1, 1):
        mask |= _blob(yy, xx, rng, 0.5 + rng.uniform(-0.03, 0.03), 0.5 + side * rng.uniform(0.17, 0.21),
                      rng.uniform(0.17, 0.21), wobble=0.15) & _ellipse(yy, xx, 0.5, 0.5 + side * 0.19, 0.3, 0.14)
    grey[mask] = 70 + 25 * yy[mask]
    for k in range(5):  # ribs over the lungs
        grey += 18 * (np.abs(yy - (0.3 + 0.09 * k) - 0.05 * np.abs(xx - 0.5)) < 0.012) * body
    grey[np.abs(xx - 0.5) < 0.035] = 215  # spine
    return _finish(np.repeat(grey[..., None], 3, -1), rng, 5.0, blur=1.0), mask


def polyp(rng: np.random.Generator, size: int = 128) -> Phantom:
    yy, xx = _grid(size)
    mask = _blob(yy, xx, rng, rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.2), wobble=0.15)
    folds = 0.5 + 0.5 * np.sin(12 * (yy + 0.3 * np.sin(5 * xx)))
    rgb = np.stack([170 + 40 * folds, 80 + 30 * folds, 80 + 25 * folds], -1)
    shade = ndi.gaussian_filter(mask.astype(float), 2.0)
    rgb = rgb * (1 - shade[..., None]) + np.array([225.0, 140, 120]) * shade[..., None]
    rgb[_ellipse(yy, xx, rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), 0.015, 0.03)] = 250  # highlight
    rgb *= (1 - 0.6 * np.hypot(yy - 0.5, xx - 0.5))[..., None]
    return _finish(rgb, rng, 4.0, blur=0.6), mask


def ultrasound(rng: np.random.Generator, size: int = 128) -> Phantom:
    yy, xx = _grid(size)
    r, theta = np.hypot(yy + 0.1, xx - 0.5), np.arctan2(xx - 0.5, yy + 0.1)
    sector = (r > 0.15) & (r < 1.05) & (np.abs(theta) < 0.6)
    cy, cx = rng.uniform(0.45, 0.7), rng.uniform(0.35, 0.65)
    mask = _ellipse(yy, xx, cy, cx, rng.uniform(0.08, 0.15), rng.uniform(0.1, 0.2), rng.uniform(-0.4, 0.4)) & sector
    echo = 120 + 40 * np.sin(9 * r) * 0.3
    echo = np.where(mask, 25.0, echo)
    echo += 50 * ((np.abs(xx - cx) < 0.1) & (yy > cy + 0.1)) * sector  # posterior enhancement
    speckle = rng.rayleigh(0.8, (size, size))
    grey = ndi.gaussian_filter(echo * speckle, 0.8) * sector
    return _finish(np.repeat(grey[..., None], 3, -1), rng, 2.0), mask


#: modality → (data set name, generator).
PHANTOMS: dict[str, tuple[str, Callable[[np.random.Generator, int], Phantom]]] = {
    "microscopy": ("synthetic_nuclei", nuclei),
    "fundus": ("synthetic_vessels", vessels),
    "dermoscopy": ("synthetic_lesions", skin_lesion),
    "xray": ("synthetic_lungs", lung_fields),
    "endoscopy": ("synthetic_polyps", polyp),
    "ultrasound": ("synthetic_cysts", ultrasound),
}


def phantom(modality: str, seed: int, size: int = 128) -> Phantom:
    """One phantom of ``modality`` (a key of :data:`PHANTOMS`) from ``seed``."""
    if modality not in PHANTOMS:
        raise KeyError(f"no phantom for modality {modality!r}; available: {', '.join(PHANTOMS)}")
    return PHANTOMS[modality][1](np.random.default_rng(seed), size)


def generate_dataset(root: str | Path, *, per_modality: int = 8, size: int = 128, seed: int = 0,
                     modalities: tuple[str, ...] | None = None) -> Path:
    """Write a synthetic multi-modality data set in the catalog layout
    (``root/<modality>/<dataset>/{images,masks}/case_###.png``); returns ``root``."""
    root = Path(root)
    for m_idx, mod in enumerate(modalities or tuple(PHANTOMS)):
        dataset = PHANTOMS[mod][0] if mod in PHANTOMS else mod
        for i in range(per_modality):
            img, mask = phantom(mod, seed=seed * 100_003 + m_idx * 10_007 + i, size=size)
            for sub, arr in (("images", img), ("masks", mask.astype(np.uint8) * 255)):
                with atomic_path(root / mod / dataset / sub / f"case_{i:03d}.png") as tmp:
                    Image.fromarray(arr).save(tmp, format="PNG")
    return root
