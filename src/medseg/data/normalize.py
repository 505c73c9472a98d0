"""Turning raw file content into medseg's canonical arrays, with clear errors.

* :func:`to_uint8_rgb` — any image (8/16-bit, signed, float, grey/LA/RGB/RGBA, 2-D or a volume) →
  uint8 RGB. uint8 passes through; other dtypes are min-max rescaled **over the whole file** (a volume
  keeps one intensity scale across its slices), as the CVPR24 pre-processing does for >8-bit data. NaN or
  infinite values are an error unless ``nan_policy="zero"``. Alpha is dropped (CVPR convention).
* :func:`to_label_map` — a mask file's values → integer label map, with the ``mask_mode`` policy:
  ``strict`` (default) accepts {0}, {0, v} (binary, any v) and rejects anything else with an error naming the
  values; ``nonzero`` takes every non-zero value as foreground; ``labels`` keeps values as labels.
"""

from __future__ import annotations

from os import PathLike
from typing import Literal

import numpy as np

from medseg.errors import InvalidInputError

NanPolicy = Literal["raise", "zero"]
MaskMode = Literal["strict", "nonzero", "labels"]


def _drop_alpha(data: np.ndarray) -> np.ndarray:
    c = data.shape[-1]
    if c in (2, 4):  # LA or RGBA
        return data[..., : c - 1]
    if c not in (1, 3):
        raise ValueError(f"{c} channels")
    return data


def to_uint8_rgb(data: np.ndarray, path: str | PathLike[str] | None = None,
                 nan_policy: NanPolicy = "raise") -> np.ndarray:
    """Canonical image array.

    Args:
        data: (..., H, W, C) with C in {1, 2, 3, 4}, or (H, W).
        path: file the data came from (for error messages).
        nan_policy: ``raise`` (default) or ``zero`` (replace non-finite values by the minimum).

    Returns:
        (..., H, W, 3) uint8.
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.size == 0:
        raise InvalidInputError(path, f"image has no pixels (shape {arr.shape})")
    try:
        arr = _drop_alpha(arr)
    except ValueError as exc:
        raise InvalidInputError(path, f"unsupported channel count: {exc}; expected grey, LA, RGB or RGBA") from None
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise InvalidInputError(path, f"unsupported pixel type {arr.dtype}")
        values = arr.astype(np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            bad = int((~finite).sum())
            if nan_policy != "zero":
                raise InvalidInputError(path, f"image contains {bad} NaN/infinite values")
            values = np.where(finite, values, np.nan)
            lo = np.nanmin(values) if finite.any() else 0.0
            values = np.where(finite, values, lo)
        lo, hi = float(values.min()), float(values.max())
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
        arr = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def mask_channels_to_single(data: np.ndarray, path: str | PathLike[str] | None = None) -> np.ndarray:
    """(..., H, W, C) mask file content → (..., H, W): grey kept, identical colour channels merged."""
    arr = np.asarray(data)
    if arr.ndim >= 3 and arr.shape[-1] in (1, 2, 3, 4):
        arr = _drop_alpha(arr)
        if arr.shape[-1] == 3 and not (np.array_equal(arr[..., 0], arr[..., 1])
                                       and np.array_equal(arr[..., 0], arr[..., 2])):
            raise InvalidInputError(path, "colour mask with differing channels; save masks as single-channel "
                                          "label maps (0 = background)")
        arr = arr[..., 0]
    return arr


def to_label_map(data: np.ndarray, path: str | PathLike[str] | None = None,
                 mask_mode: MaskMode = "strict") -> np.ndarray:
    """Canonical mask array.

    Args:
        data: (..., H, W) or (..., H, W, C) mask values.
        path: file the data came from (for error messages).
        mask_mode: ``strict`` | ``nonzero`` | ``labels`` (module docstring).

    Returns:
        (..., H, W) bool for ``strict``/``nonzero``; uint16 label map for ``labels``.
    """
    arr = mask_channels_to_single(data, path)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInputError(path, "mask contains NaN/infinite values")
        if not np.array_equal(arr, np.round(arr)):
            raise InvalidInputError(path, "mask has fractional values; expected integer labels")
    if arr.dtype != bool and arr.size and arr.min() < 0:
        raise InvalidInputError(path, "mask has negative values")
    if mask_mode == "nonzero":
        return arr != 0
    if mask_mode == "labels":
        if arr.size and arr.max() > np.iinfo(np.uint16).max:
            raise InvalidInputError(path, "mask labels exceed 65535")
        return arr.astype(np.uint16)
    if mask_mode != "strict":
        raise ValueError(f"unknown mask_mode {mask_mode!r}; choose strict, nonzero or labels")
    values = np.unique(arr)
    if values.size > 2 or (values.size == 2 and values[0] != 0):
        shown = ", ".join(str(v) for v in values[:8].tolist()) + (" …" if values.size > 8 else "")
        raise InvalidInputError(path, f"mask is not binary (values {{{shown}}}); use mask_mode='nonzero' to take "
                                      "every non-zero value as foreground or 'labels' to keep a label map")
    return arr != 0
