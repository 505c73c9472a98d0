"""CVPR 2024 "MedSAM on laptop" ``.npz`` files (``shared/notes`` §6).

* 2-D: ``imgs`` (H, W, 3) or (H, W) uint8; optional ``gts`` (H, W) label map; optional ``boxes`` (N, 4)
  ``[x_min, y_min, x_max, y_max]``.
* 3-D: ``imgs`` (D, H, W) uint8, ``gts`` (D, H, W), ``spacing`` stored as SimpleITK (x, y, z) — medseg
  reverses it to array order (z, y, x); ``boxes`` (N, 6).

Which one a file is follows the array rank (a 3-D ``imgs`` whose last axis is not 3 is a volume); the
``2D``/``3D`` file-name prefix is not needed. Masks are written as the challenge expects: key ``segs``,
uint16 (uint8 overflows past 255 boxes), shape ``imgs.shape[:2]`` (2-D) or ``imgs.shape`` (3-D).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.readers.base import BaseReader, register_reader
from medseg.data.sample import ImageVolume
from medseg.errors import InvalidInputError
from medseg.utils.atomic import atomic_path


def _is_volume(imgs: np.ndarray) -> bool:
    return imgs.ndim == 3 and imgs.shape[-1] not in (3, 4)


@register_reader
class NpzReader(BaseReader):
    name = "npz"
    extensions = (".npz",)

    def _read(self, path: Path) -> ImageVolume:
        import zipfile

        if not zipfile.is_zipfile(path):  # np.load would try it as a pickle and advise loading it unsafely
            raise InvalidInputError(path, "cannot read as npz: not a complete zip archive (truncated, or not an npz "
                                          "archive at all); medseg never loads pickles")
        with np.load(path, allow_pickle=False) as f:
            if "imgs" not in f.files and "segs" not in f.files:
                raise InvalidInputError(path, f"npz has no 'imgs' array (keys: {', '.join(f.files) or 'none'})")
            # a CVPR24 prediction file holds only 'segs': read as the (label) image, e.g. by ``medseg evaluate``
            imgs = f["imgs"] if "imgs" in f.files else f["segs"]
            gts = f["gts"] if "gts" in f.files else None
            boxes = f["boxes"] if "boxes" in f.files else None
            spacing_xyz = f["spacing"] if "spacing" in f.files else None
        if _is_volume(imgs):
            data = imgs[..., None]
            labels = gts
            sz = sy = sx = 1.0
            if spacing_xyz is not None and np.size(spacing_xyz) >= 3:
                sx, sy, sz = (float(v) for v in np.ravel(spacing_xyz)[:3])
            spacing = (sz, sy, sx)
        elif imgs.ndim in (2, 3):
            data = imgs[None, ..., None] if imgs.ndim == 2 else imgs[None]
            labels = None if gts is None else gts[None]
            spacing = (1.0, 1.0, 1.0)
        else:
            raise InvalidInputError(path, f"'imgs' has unsupported shape {imgs.shape}")
        if labels is not None and labels.shape != data.shape[:3]:
            raise InvalidInputError(path, f"'gts' shape {gts.shape} does not match 'imgs' shape {imgs.shape}")
        meta = {"boxes": boxes, "volume": _is_volume(imgs)}
        return ImageVolume(data, spacing=spacing, labels=labels, meta=meta)

    def _write_mask(self, labels: np.ndarray, dest: Path, source: ImageVolume | None) -> None:
        segs = labels.astype(np.uint16)
        if source is None or not source.meta.get("volume", False):
            segs = segs[0] if segs.shape[0] == 1 else segs
        with atomic_path(dest, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, segs=segs)
