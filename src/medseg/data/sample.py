"""The data types every medseg component exchanges.

* :class:`ImageVolume` — what a reader returns for one file: raw values of ``S`` 2-D slices.
* :class:`Sample` — one 2-D image ready for the models: uint8 RGB, its mask, and where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ImageVolume:
    """Raw content of one file.

    Attributes:
        data: (S, H, W, C) array in the file's dtype; a 2-D file has S = 1, grey images C = 1.
        spacing: physical size of (slice, row, column) steps, **array order** (a 2-D file: (1, sy, sx)).
        labels: (S, H, W) integer label map stored in the same file (CVPR npz ``gts``), else ``None``.
        meta: format-specific extras (``boxes``, DICOM header fields, NIfTI affine, source dtype…).
    """

    data: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_slices(self) -> int:
        return int(self.data.shape[0])


@dataclass
class Sample:
    """One 2-D image and its ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB, 0–255.
        mask: (H, W) bool binary mask, an (H, W) integer label map (0 = background), or ``None``
            for unlabeled data.
        modality: canonical modality name (see :mod:`medseg.data.modality`).
        dataset: data set name.
        case_id: unique id within the data set (file stem, ``_z###`` appended for slices of a volume).
        spacing: (sy, sx) pixel size in array order.
        slice_spacing: distance between the slices of the source volume (1 for 2-D files), so that writing
            the slices back as a volume keeps the z spacing.
        image_path, mask_path: source files.
        slice_index: index of the slice within a 3-D file (0 for 2-D files).
        meta: extras (e.g. CVPR ``boxes``).
    """

    image: np.ndarray
    mask: np.ndarray | None
    modality: str
    dataset: str
    case_id: str
    spacing: tuple[float, float] = (1.0, 1.0)
    slice_spacing: float = 1.0
    image_path: Path | None = None
    mask_path: Path | None = None
    slice_index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def binary_mask(self) -> np.ndarray | None:
        """Union of all foreground labels as an (H, W) bool array."""
        return None if self.mask is None else np.asarray(self.mask) > 0
