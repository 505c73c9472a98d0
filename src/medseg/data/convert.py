"""``medseg data convert``: catalog folders ⇄ CVPR24 npz files, with optional resizing.

* folder → npz: every pair under ``<root>/<modality>/<dataset>/{images,masks}`` becomes
  ``<out>/<modality>/<dataset>/<case>.npz`` with ``imgs`` (H, W, 3) uint8 and ``gts`` (H, W) label map
  (uint8, uint16 past 255 labels). A multi-slice source (NIfTI, multi-frame DICOM) becomes one 3-D npz
  with grey ``imgs`` (D, H, W) and ``spacing`` in the challenge's (x, y, z) order.
* npz → folder: each npz becomes ``images/<case>.png`` (+ ``masks/<case>.png`` when it has ``gts``);
  slices of a 3-D npz become ``<case>_z###``. Binary masks are written 0/255, label maps as values.

Resizing (``max_size``) scales the longest side down to ``max_size`` — images with area averaging (as
``cv2.INTER_AREA`` in the CVPR pre-processing), masks with nearest neighbour; smaller images are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.data.catalog import CatalogEntry, discover
from medseg.data.geometry import letterbox_geometry, resize_image, resize_mask
from medseg.data.loading import load_samples
from medseg.data.normalize import MaskMode
from medseg.data.readers import file_extension
from medseg.data.sample import Sample
from medseg.errors import InvalidInputError
from medseg.utils.atomic import atomic_path


def resize_longest(image: np.ndarray, mask: np.ndarray | None, max_size: int | None) -> tuple[np.ndarray,
                                                                                              np.ndarray | None]:
    """Scale (H, W, 3) uint8 ``image`` (area) and (H, W) ``mask`` (nearest) so that max(H, W) ≤ max_size."""
    h, w = image.shape[:2]
    if max_size is None or max(h, w) <= max_size:
        return image, mask
    hw = letterbox_geometry((h, w), max_size).new_hw
    return resize_image(image, hw), None if mask is None else resize_mask(mask, hw)


def _label_dtype(arr: np.ndarray) -> np.dtype:
    return np.dtype(np.uint8) if arr.max(initial=0) <= 255 else np.dtype(np.uint16)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def _save_png(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def _mask_png(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype == bool or m.max(initial=0) <= 1:
        return m.astype(np.uint8) * 255
    return m.astype(_label_dtype(m))


def folder_to_npz(root: str | Path, out: str | Path, *, max_size: int | None = None, mask_mode: MaskMode = "strict",
                  progress: Callable[[CatalogEntry], None] | None = None,
                  entries: list[CatalogEntry] | None = None, on_error: str = "stop",
                  skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Convert a catalog folder to CVPR24 npz files; returns the written paths (``entries``: already
    discovered pairs of ``root``; ``on_error="skip"`` passes over unusable inputs, appending
    ``(file, problem)`` to ``skipped``)."""
    entries = discover(root)[0] if entries is None else entries
    written = []
    for e in entries:  # an npz input is read and written again like any other (resized if asked), never dropped
        with _guard(e, on_error, skipped):
            samples = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode=mask_mode)
            dest = Path(out) / e.modality / e.dataset / f"{e.case_id}.npz"
            written.append(_write_samples_npz(samples, dest, max_size))
        if progress is not None:
            progress(e)
    return written


@contextmanager
def _guard(entry: CatalogEntry, on_error: str, skipped: list[tuple[Path, str]] | None) -> Iterator[None]:
    """Let an :class:`InvalidInputError` through (``stop``) or record it and carry on (``skip``)."""
    try:
        yield
    except InvalidInputError as exc:
        if on_error != "skip":
            raise
        if skipped is not None:
            skipped.append((Path(exc.path or entry.image), exc.problem))


def _write_samples_npz(samples: list[Sample], dest: Path, max_size: int | None) -> Path:
    resized = [resize_longest(s.image, s.mask, max_size) for s in samples]
    has_mask = all(m is not None for _, m in resized)
    if len(samples) == 1:
        img, mask = resized[0]
        arrays = {"imgs": img}
        if has_mask:
            arrays["gts"] = np.asarray(mask).astype(_label_dtype(np.asarray(mask)))
    else:
        arrays = {"imgs": np.stack([img[..., 0] for img, _ in resized])}
        if has_mask:
            stack = np.stack([np.asarray(m) for _, m in resized])
            arrays["gts"] = stack.astype(_label_dtype(stack))
        sy, sx = samples[0].spacing
        arrays["spacing"] = np.array([sx, sy, samples[0].slice_spacing], dtype=np.float64)
    _save_npz(dest, **arrays)
    return dest


def npz_to_folder(root: str | Path, out: str | Path, *, max_size: int | None = None,
                  progress: Callable[[CatalogEntry], None] | None = None,
                  entries: list[CatalogEntry] | None = None, on_error: str = "stop",
                  skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Convert npz files found in a catalog tree to ``images/`` + ``masks/`` PNG folders (``on_error``,
    ``skipped``: as :func:`folder_to_npz`)."""
    entries = discover(root)[0] if entries is None else entries
    written = []
    for e in entries:
        if file_extension(e.image) != ".npz":
            continue
        with _guard(e, on_error, skipped):
            for s in load_samples(e.image, None, modality=e.modality, dataset=e.dataset):
                img, mask = resize_longest(s.image, s.mask, max_size)
                base = Path(out) / e.modality / e.dataset
                _save_png(base / "images" / f"{s.case_id}.png", img)
                written.append(base / "images" / f"{s.case_id}.png")
                if mask is not None:
                    _save_png(base / "masks" / f"{s.case_id}.png", _mask_png(mask))
        if progress is not None:
            progress(e)
    return written
