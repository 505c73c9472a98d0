"""Ordinary raster images: PNG, JPEG, BMP, GIF (Pillow) and TIFF (tifffile; 8/16-bit, float, multi-page)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medseg.data.readers.base import BaseReader, register_reader
from medseg.data.sample import ImageVolume
from medseg.errors import InvalidInputError
from medseg.utils.atomic import atomic_path


def _as_shwc(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None, :, :, None]
    if arr.ndim == 3:
        return arr[None]
    raise ValueError(f"unsupported array shape {arr.shape}")


@register_reader
class PillowReader(BaseReader):
    """PNG/JPEG/BMP/GIF via Pillow. 16-bit PNGs keep their values; palette images become RGB (or, as a
    mask, their palette indices)."""

    name = "pillow"
    extensions = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

    def _read(self, path: Path) -> ImageVolume:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                warnings.warn(f"animated image with {frames} frames: only the first is read (save the frames as a "
                              "multi-page TIFF to segment them all)", stacklevel=2)
            img.load()  # forces decoding: truncated files fail here
            mode = img.mode
            if mode == "P":
                has_colour_palette = len(set(img.getpalette() or [])) > 2
                img = img.convert("RGBA" if "transparency" in img.info else "RGB") if has_colour_palette else img
            elif mode in ("CMYK", "YCbCr", "HSV", "LAB"):
                img = img.convert("RGB")
            elif mode == "1":
                img = img.convert("L")
            arr = np.array(img)
        if arr.dtype == np.int32 and mode.startswith("I"):  # Pillow reports 16-bit PNG as I;16 or I
            arr = arr.astype(np.uint16) if arr.min() >= 0 and arr.max() <= 65535 else arr
        return ImageVolume(_as_shwc(arr), meta={"mode": mode, "dtype": str(arr.dtype)})

    def _write_mask(self, labels: np.ndarray, dest: Path, source: ImageVolume | None) -> Path:
        if labels.shape[0] != 1:
            raise InvalidInputError(dest, "a PNG/JPEG/BMP/GIF mask holds one 2-D slice")
        arr = labels[0]
        if dest.suffix.lower() in (".jpg", ".jpeg"):
            dest = dest.with_suffix(".png")  # never write a lossy mask
        if arr.max(initial=0) <= 1:
            arr = arr.astype(np.uint8) * 255
        img = Image.fromarray(arr.astype(np.uint8) if arr.max(initial=0) <= 255 else arr.astype(np.uint16))
        with atomic_path(dest) as tmp:
            img.save(tmp, format={".bmp": "BMP", ".gif": "GIF"}.get(dest.suffix.lower(), "PNG"))
        return dest


@register_reader
class TiffReader(BaseReader):
    """TIFF via tifffile: grey/RGB/RGBA, 8/16/32-bit integer or float; multi-page files become slices."""

    name = "tiff"
    extensions = (".tif", ".tiff")

    def _read(self, path: Path) -> ImageVolume:
        arr = tifffile.imread(path)
        if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4):  # pages × H × W
            arr = arr[..., None]
        data = arr if arr.ndim == 4 else _as_shwc(arr)
        return ImageVolume(data, meta={"dtype": str(arr.dtype)})

    def _write_mask(self, labels: np.ndarray, dest: Path, source: ImageVolume | None) -> None:
        arr = labels.astype(np.uint8) * 255 if labels.max(initial=0) <= 1 else labels
        arr = arr.astype(np.uint8) if arr.max(initial=0) <= 255 else arr.astype(np.uint16)
        with atomic_path(dest) as tmp:
            tifffile.imwrite(tmp, arr[0] if arr.shape[0] == 1 else arr)
