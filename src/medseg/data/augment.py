"""Training patches and augmentations for 2-D images, as pure functions of an explicit ``numpy`` generator.

Every random choice is drawn from the ``rng`` passed in, so a caller that seeds it from ``(seed, draw id)`` gets
the same patch for the same draw whatever the worker, rank or restart (see
:class:`medseg.training.dataset.PatchDataset`).

Shapes: images (C, H, W) float32 in [0, 1]; masks (H, W) uint8 {0, 1}.

Patch sampling follows nnU-Net: a share ``foreground_oversample`` of the patches is centred on a random foreground
pixel, the others lie uniformly in the image; an image smaller than the patch is zero-padded (never upscaled). The
spatial augmentations (flips, 90° rotations, a small affine) and the intensity ones (brightness, contrast, gamma) are
each optional (:class:`AugmentOptions`), as is a strong photometric change (:func:`colour_jitter`). The affine is
applied while the patch is cut out of the whole image, so its corners hold real pixels rather than padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AugmentOptions:
    """Which augmentations run and how strong they are (probabilities are per patch).

    Attributes:
        flips: random horizontal and vertical flips (p = 0.5 each).
        rot90: a random multiple of 90° (square patches only; ignored on the letterbox path).
        affine_p: probability of a random rotation (± ``rotate_deg``) and isotropic scaling (``scale`` range);
            patch training only.
        intensity_p: probability of a multiplicative brightness change and, independently, of a contrast change
            (factors drawn from ``brightness`` / ``contrast``; contrast keeps the patch mean).
        gamma_p: probability of a gamma change ``x ** g`` with g drawn log-uniformly from ``gamma``.
        colour_p: probability of :func:`colour_jitter` after the intensity changes — what another camera, stain or
            scanner does (white balance, saturation, grey, blur, strong brightness/contrast/gamma); for models meant
            to hold up on datasets they never saw.
    """

    flips: bool = True
    rot90: bool = False
    affine_p: float = 0.0
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    intensity_p: float = 0.0
    brightness: tuple[float, float] = (0.75, 1.25)
    contrast: tuple[float, float] = (0.75, 1.25)
    gamma_p: float = 0.0
    gamma: tuple[float, float] = (0.7, 1.5)
    colour_p: float = 0.0

    def __post_init__(self) -> None:
        for name in ("affine_p", "intensity_p", "gamma_p", "colour_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        for name in ("scale", "brightness", "contrast", "gamma"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a range 0 < low ≤ high, got {(lo, hi)}")


def patch_centre(mask: np.ndarray, size: int, rng: np.random.Generator, *, foreground: bool) -> tuple[int, int]:
    """Centre (row, col) of a ``size``×``size`` patch in an (H, W) image.

    ``foreground``: centred on a random foreground pixel of ``mask`` (shifted so that the patch stays inside the
    image where the image is large enough); otherwise uniform over the positions that keep the patch inside (or,
    along an axis shorter than the patch, a uniform placement of the image inside the patch).
    """
    centre = []
    fg = np.flatnonzero(mask) if foreground else np.empty(0, np.int64)
    pick = np.unravel_index(int(fg[rng.integers(len(fg))]), mask.shape) if len(fg) else None
    for axis, n in enumerate(mask.shape):
        half = size // 2
        lo, hi = (half, n - size + half) if n >= size else (n - size + half, half)
        c = int(pick[axis]) if pick is not None else int(rng.integers(lo, hi + 1))
        centre.append(min(max(c, lo), hi))
    return centre[0], centre[1]


def random_affine(rng: np.random.Generator, opts: AugmentOptions) -> np.ndarray | None:
    """A 2×2 patch→image matrix (rotation × isotropic scale) with probability ``opts.affine_p``, else ``None``."""
    if opts.affine_p <= 0 or rng.random() >= opts.affine_p:
        return None
    theta = np.deg2rad(rng.uniform(-opts.rotate_deg, opts.rotate_deg))
    s = rng.uniform(*opts.scale)
    c, si = np.cos(theta), np.sin(theta)
    return np.array([[c, -si], [si, c]]) / s


def extract_patch(image: np.ndarray, mask: np.ndarray, centre: tuple[int, int], size: int,
                  matrix: np.ndarray | None = None, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``size``×``size`` patch around ``centre`` from (C, H, W) ``image`` (any real dtype; only the patch is
    converted to float32) and (H, W) ``mask``.

    Outside the image is ``fill`` (mask: 0). With ``matrix`` (2×2, patch offsets → image offsets, from
    :func:`random_affine`) the patch is resampled through it about the centre (bilinear image, nearest mask).

    Returns:
        (C, size, size) float32 and (size, size) uint8.
    """
    half = size // 2
    cy, cx = centre
    if matrix is None:
        out_img = np.full((image.shape[0], size, size), fill, np.float32)
        out_mask = np.zeros((size, size), np.uint8)
        y0, x0 = cy - half, cx - half
        ys, xs = max(y0, 0), max(x0, 0)
        ye, xe = min(y0 + size, image.shape[1]), min(x0 + size, image.shape[2])
        if ye > ys and xe > xs:
            out_img[:, ys - y0:ye - y0, xs - x0:xe - x0] = image[:, ys:ye, xs:xe]
            out_mask[ys - y0:ye - y0, xs - x0:xe - x0] = mask[ys:ye, xs:xe]
        return out_img, out_mask
    # image coordinate = centre + M (patch coordinate - patch centre)
    offset = np.array([cy, cx], np.float64) - matrix @ np.array([half, half], np.float64)
    out_img = np.stack([ndimage.affine_transform(ch, matrix, offset, output_shape=(size, size), output=np.float32,
                                                 order=1, mode="constant", cval=fill) for ch in image])
    out_mask = ndimage.affine_transform(mask.astype(np.uint8), matrix, offset, output_shape=(size, size), order=0,
                                        mode="constant", cval=0)
    return out_img.astype(np.float32), out_mask.astype(np.uint8)


def flip_rotate(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, opts: AugmentOptions
                ) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and (square inputs, ``opts.rot90``) a random multiple of 90°, applied to image and mask alike."""
    if opts.flips:
        if rng.random() < 0.5:
            image, mask = image[:, :, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[:, ::-1, :], mask[::-1, :]
    if opts.rot90 and mask.shape[0] == mask.shape[1]:
        k = int(rng.integers(4))
        if k:
            image, mask = np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def intensity(image: np.ndarray, rng: np.random.Generator, opts: AugmentOptions,
              region: tuple[int, int] | None = None) -> np.ndarray:
    """Brightness, contrast and gamma changes of a (C, H, W) [0, 1] image, result clipped to [0, 1].

    ``region``: (h, w) of the image content in the top-left corner (the letterbox); the padding stays 0.
    """
    h, w = region if region is not None else image.shape[1:]
    view = image[:, :h, :w]
    changed = False
    if opts.intensity_p > 0 and rng.random() < opts.intensity_p:
        view = view * rng.uniform(*opts.brightness)
        changed = True
    if opts.intensity_p > 0 and rng.random() < opts.intensity_p:
        mean = float(view.mean())
        view = (view - mean) * rng.uniform(*opts.contrast) + mean
        changed = True
    if opts.gamma_p > 0 and rng.random() < opts.gamma_p:
        g = float(np.exp(rng.uniform(np.log(opts.gamma[0]), np.log(opts.gamma[1]))))
        view = np.clip(view, 0.0, 1.0) ** g
        changed = True
    if not changed:
        return image
    out = image.copy()
    out[:, :h, :w] = np.clip(view, 0.0, 1.0)
    return out


#: the photometric jitter of :func:`colour_jitter`: brightness, contrast and gamma always (:func:`intensity`)
JITTER_INTENSITY = AugmentOptions(flips=False, intensity_p=1.0, brightness=(0.7, 1.3), contrast=(0.7, 1.3),
                                  gamma_p=1.0, gamma=(0.7, 1.5))


def colour_jitter(image: np.ndarray, rng: np.random.Generator, region: tuple[int, int] | None = None, *,
                  gain: float = 0.15, saturation: tuple[float, float] = (0.5, 1.5), grey_p: float = 0.2,
                  blur_p: float = 0.2, blur_sigma: tuple[float, float] = (0.5, 1.5)) -> np.ndarray:
    """A strong photometric change of a (C, H, W) [0, 1] image — what a different camera, stain, illumination or
    scanner does — keeping its geometry (so its mask is unchanged): brightness, contrast and gamma
    (:data:`JITTER_INTENSITY`), then for colour images a per-channel gain in ``1 ± gain`` (white balance) and a
    saturation factor, with probability ``grey_p`` the grey image (replicated to every channel), and with
    probability ``blur_p`` a Gaussian blur. Result clipped to [0, 1], float32.

    ``region``: (h, w) of the image content in the top-left corner (the letterbox); the padding stays 0.
    """
    h, w = region if region is not None else image.shape[1:]
    out = np.array(intensity(image.astype(np.float32, copy=False), rng, JITTER_INTENSITY, (h, w)), np.float32)
    view = out[:, :h, :w]
    colour = out.shape[0] == 3 and not (np.array_equal(view[0], view[1]) and np.array_equal(view[1], view[2]))
    if colour:
        view *= rng.uniform(1 - gain, 1 + gain, size=(3, 1, 1)).astype(np.float32)
        grey = view.mean(axis=0, keepdims=True)
        view[:] = grey + (view - grey) * np.float32(rng.uniform(*saturation))
        if rng.random() < grey_p:
            view[:] = view.mean(axis=0, keepdims=True)
    if rng.random() < blur_p:
        sigma = float(rng.uniform(*blur_sigma))
        view[:] = np.stack([ndimage.gaussian_filter(ch, sigma) for ch in view])
    np.clip(view, 0.0, 1.0, out=view)
    return out


def zoom_crop_box(rng: np.random.Generator, region: tuple[int, int], area: tuple[float, float] = (0.45, 0.9),
                  ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """A seeded crop of an (h, w) region, ``(top, left, height, width)``: a share ``area`` of its pixels with an
    aspect change in ``ratio`` (log-uniform), anywhere inside it — the field-of-view change of a different camera
    or framing. Image and mask drawn from the same ``rng`` state get the same box."""
    h, w = region
    share = float(rng.uniform(*area))
    r = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
    ch = int(np.rint(min(h, max(1.0, np.sqrt(share * h * w / r)))))
    cw = int(np.rint(min(w, max(1.0, np.sqrt(share * h * w * r)))))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return top, left, ch, cw


def zoom_crop(array: np.ndarray, box: tuple[int, int, int, int], region: tuple[int, int]) -> np.ndarray:
    """``array`` (…, H, W) with its (h, w) region (top-left; the rest is padding, kept) replaced by ``box``
    (:func:`zoom_crop_box`) of it resized back to (h, w): bilinear for float images, nearest neighbour for integer
    and boolean arrays (masks keep their labels). Returns a new array of the same shape and dtype."""
    top, left, ch, cw = box
    h, w = region
    out = np.array(array, copy=True)
    crop = np.asarray(array[..., top:top + ch, left:left + cw])
    order = 1 if np.issubdtype(array.dtype, np.floating) else 0
    lead = (1.0,) * (array.ndim - 2)
    zoomed = ndimage.zoom(crop.astype(np.float32) if order else crop, (*lead, h / ch, w / cw), order=order,
                          mode="nearest", grid_mode=True)
    out[..., :h, :w] = zoomed[..., :h, :w].astype(array.dtype, copy=False)
    return out
