"""NIfTI (``.nii``, ``.nii.gz``) via nibabel: a 2-D image or the 2-D slices of a 3-D volume.

Axis convention: nibabel returns voxel arrays indexed (i, j, k) = (x, y, z). medseg slices along k and
transposes each slice to (row = j, column = i), so ``data`` is (S = K, H = J, W = I, 1) and spacing is
(dz, dy, dx) from the header zooms — array order. Writing a mask applies the inverse and keeps the
source's affine and header.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.data.readers.base import BaseReader, register_reader
from medseg.data.sample import ImageVolume
from medseg.errors import InvalidInputError
from medseg.utils.atomic import atomic_path


@register_reader
class NiftiReader(BaseReader):
    name = "nifti"
    extensions = (".nii", ".nii.gz")

    def _read(self, path: Path) -> ImageVolume:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
        if arr.ndim == 4 and arr.shape[3] == 1:
            arr = arr[..., 0]
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise InvalidInputError(path, f"expected a 2-D or 3-D NIfTI image, got shape {arr.shape}")
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3]) + (1.0,) * (3 - len(img.header.get_zooms()[:3]))
        data = np.ascontiguousarray(np.transpose(arr, (2, 1, 0)))[..., None]  # (K, J, I, 1)
        spacing = (zooms[2], zooms[1], zooms[0])
        return ImageVolume(data, spacing=spacing, meta={"affine": img.affine, "header": img.header,
                                                         "dtype": str(arr.dtype)})

    def _write_mask(self, labels: np.ndarray, dest: Path, source: ImageVolume | None) -> None:
        vol = np.transpose(labels, (2, 1, 0))
        dtype = np.uint8 if labels.max(initial=0) <= 255 else np.uint16
        affine = source.meta.get("affine") if source is not None else None
        header = source.meta.get("header").copy() if source is not None and "header" in source.meta else None
        img = nib.Nifti1Image(vol.astype(dtype), np.eye(4) if affine is None else affine, header=header)
        img.set_data_dtype(dtype)
        suffix = ".nii.gz" if dest.name.lower().endswith(".nii.gz") else ".nii"
        with atomic_path(dest, suffix=suffix) as tmp:
            nib.save(img, str(tmp))
