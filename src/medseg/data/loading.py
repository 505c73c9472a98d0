"""Loading image (+ mask) files into :class:`~medseg.data.sample.Sample` objects — the one loader
every medseg component uses."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.data.modality import canonical_modality
from medseg.data.normalize import MaskMode, NanPolicy, to_label_map, to_uint8_rgb
from medseg.data.readers import file_extension, get_reader, supported_extensions
from medseg.data.readers.base import DicomWindow
from medseg.data.sample import ImageVolume, Sample
from medseg.errors import InvalidInputError


def file_stem(path: str | Path) -> str:
    """File name without its (possibly compound, e.g. ``.nii.gz``) extension."""
    name = Path(path).name
    ext = file_extension(name)
    return name[: len(name) - len(ext)] if ext else name


MASK_NAME_SUFFIXES = ("_mask", "_seg", "_gt", "_label", "_pred")


def case_key(path: str | Path) -> str:
    """File stem without a trailing mask suffix (``case_01_mask.png`` → ``case_01``), to pair images, masks and
    predictions by name."""
    stem = file_stem(path)
    for s in MASK_NAME_SUFFIXES:
        if stem.lower().endswith(s):
            return stem[: -len(s)]
    return stem


def supported_files(root: str | Path) -> list[Path]:
    """Every file under ``root`` (recursive, sorted) that a registered reader can open."""
    exts = set(supported_extensions())
    return [f for f in sorted(Path(root).rglob("*")) if f.is_file() and file_extension(f) in exts]


def read_mask(path: str | Path, mask_mode: MaskMode = "strict", reader: str | None = None) -> tuple[np.ndarray,
                                                                                                      ImageVolume]:
    """Read a mask file → ((S, H, W) bool or uint16 label map, raw volume)."""
    vol = get_reader(path, reader).read(path)
    return to_label_map(vol.data, path, mask_mode), vol


def load_samples(
    image_path: str | Path,
    mask_path: str | Path | None = None,
    *,
    modality: str = "unknown",
    dataset: str = "unknown",
    case_id: str | None = None,
    mask_mode: MaskMode = "strict",
    nan_policy: NanPolicy = "raise",
    reader: str | None = None,
    mask_reader: str | None = None,
    dicom_window: DicomWindow = "header",
) -> list[Sample]:
    """Read one image file (and its mask) into one :class:`Sample` per 2-D slice.

    Args:
        image_path: any supported file (see :func:`medseg.data.readers.supported_extensions`).
        mask_path: separate mask file; if ``None``, labels stored in the image file (CVPR npz ``gts``) are
            used, read as a label map.
        modality, dataset: provenance, stored on every sample (modality canonicalised).
        case_id: defaults to the file stem; slices of a volume get ``_z###`` appended.
        mask_mode: policy for mask values (:func:`medseg.data.normalize.to_label_map`).
        nan_policy: ``raise`` or ``zero`` for NaN/inf pixel values.
        reader, mask_reader: reader names overriding the extension.
        dicom_window: DICOM images only: ``"header"`` (the file's window), ``None`` (whole range) or
            ``(center, width)`` in rescaled units (e.g. ``(40, 400)`` for a CT soft-tissue window).

    Raises:
        InvalidInputError: unreadable file, bad values, or image/mask size mismatch — naming the file.
    """
    image_path = Path(image_path)
    vol = get_reader(image_path, reader, dicom_window=dicom_window).read(image_path)
    images = to_uint8_rgb(vol.data, image_path, nan_policy)
    labels: np.ndarray | None = None
    if mask_path is not None:
        labels, _ = read_mask(mask_path, mask_mode, mask_reader)
        if labels.shape != images.shape[:3]:
            raise InvalidInputError(
                mask_path,
                f"mask size {_shape_text(labels.shape)} does not match image size {_shape_text(images.shape[:3])} "
                f"of {image_path}",
            )
    elif vol.labels is not None:
        labels = to_label_map(vol.labels, image_path, "labels" if mask_mode == "strict" else mask_mode)
    stem = case_id or file_stem(image_path)
    n = images.shape[0]
    meta = {k: v for k, v in vol.meta.items() if k in ("boxes", "window")}
    samples = []
    for s in range(n):
        samples.append(Sample(
            image=images[s],
            mask=None if labels is None else labels[s],
            modality=canonical_modality(modality),
            dataset=dataset,
            case_id=stem if n == 1 else f"{stem}_z{s:03d}",
            spacing=(vol.spacing[1], vol.spacing[2]),
            slice_spacing=float(vol.spacing[0]),
            image_path=image_path,
            mask_path=None if mask_path is None else Path(mask_path),
            slice_index=s,
            meta=dict(meta),
        ))
    return samples


LabelMode = Literal["keep", "union", "per_label"]


def expand_labels(samples: list[Sample], mode: LabelMode = "keep") -> list[Sample]:
    """Turn label-map masks into binary masks.

    Args:
        samples: samples whose ``mask`` may be an integer label map.
        mode: ``keep`` — unchanged; ``union`` — one sample with the union of all labels (bool);
            ``per_label`` — one sample per label present, ``case_id`` suffixed ``_l<label>``, bool mask
            (a slice without labels is kept once with an empty mask).

    Returns:
        The expanded list (bool masks except for ``keep``).
    """
    if mode == "keep":
        return samples
    if mode not in ("union", "per_label"):
        raise ValueError(f"unknown label mode {mode!r}; choose keep, union or per_label")
    out: list[Sample] = []
    for s in samples:
        if s.mask is None or np.asarray(s.mask).dtype == bool:
            out.append(s)
        elif mode == "union":
            out.append(replace(s, mask=np.asarray(s.mask) > 0))
        else:
            labels = [int(v) for v in np.unique(s.mask) if v != 0]
            if not labels:
                out.append(replace(s, mask=np.zeros(s.mask.shape, bool)))
            out += [replace(s, mask=np.asarray(s.mask) == lab, case_id=f"{s.case_id}_l{lab}",
                            meta={**s.meta, "label": lab}) for lab in labels]
    return out


def _shape_text(shape: tuple[int, ...]) -> str:
    s, h, w = shape
    return f"{h}×{w}" if s == 1 else f"{s}×{h}×{w}"
