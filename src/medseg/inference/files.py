"""Predict whole files: any supported image/volume → a mask file in the input's format + a PNG overlay."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from medseg.data.geometry import boxes_from_mask
from medseg.data.loading import MASK_NAME_SUFFIXES, case_key, file_stem, read_mask, supported_files
from medseg.data.normalize import to_uint8_rgb
from medseg.data.readers import get_reader
from medseg.data.readers.base import DicomWindow, file_extension
from medseg.errors import InvalidInputError
from medseg.inference.predictor import Predictor
from medseg.ops.boundary import overlay_contours
from medseg.utils.atomic import atomic_path

if TYPE_CHECKING:
    from medseg.inference.universal import UniversalPredictor


def collect_inputs(inputs: Iterable[str | Path]) -> list[tuple[Path, Path]]:
    """(file, output sub-folder) pairs: files given directly (sub-folder ``.``), plus every supported file under
    given folders (recursive, sorted; sub-folder = its folder relative to the given one without ``images`` parts),
    skipping files that look like masks (a ``masks``/``labels`` folder or a mask suffix)."""
    out: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in supported_files(p):
                if {"masks", "labels", "gts"} & {part.lower() for part in f.relative_to(p).parts[:-1]}:
                    continue
                if file_stem(f).lower().endswith(MASK_NAME_SUFFIXES):
                    continue
                rel = [part for part in f.relative_to(p).parts[:-1] if part.lower() != "images"]
                out.append((f, Path(*rel) if rel else Path(".")))
        elif p.exists():
            out.append((p, Path(".")))
        else:
            raise InvalidInputError(p, "no such file or folder")
    return out


@dataclass
class FilePrediction:
    """What was written for one input file."""

    image: Path
    mask: Path
    overlay: Path
    slices: int
    foreground: float
    task: str | None = None  # what a task model (ESP-MedSAM) segmented it as (the middle slice's, for a volume)
    task_probability: float | None = None  # the universal model's classifier probability of ``task``
    engine: str | None = None  # the universal model's engine for it (head, specialist, lite_medsam_box)
    confident: bool = True  # False: the classifier was less sure than --min-confidence


def masks_by_case(folder: str | Path) -> dict[str, Path]:
    """Every supported file under ``folder`` keyed by :func:`case_key`."""
    return {case_key(f): f for f in supported_files(folder)}


def predict_files(predictor: Predictor | UniversalPredictor, files: Iterable[tuple[Path, Path]], out_dir: str | Path, *,
                  prompt_masks: dict[Path, Path] | None = None,
                  progress: Callable[[int], None] | None = None, on_error: str = "stop",
                  skipped: list[tuple[Path, str]] | None = None,
                  dicom_window: DicomWindow = "header") -> list[FilePrediction]:
    """Segment each file (every slice of a volume) and write ``out_dir/<stem><ext>`` and ``<stem>_overlay.png``.

    Args:
        predictor: a :class:`Predictor`.
        files: (input file, output sub-folder) pairs from :func:`collect_inputs`.
        out_dir: output folder (masks keep the input's format; JPEG becomes PNG).
        prompt_masks: optional image → mask file; SAM-family models then get one box per mask component
            (box-prompted mode). Without it they run prompt-free.
        on_error: ``stop`` at the first unusable input (raising its :class:`InvalidInputError`), or ``skip`` it,
            appending ``(file, problem)`` to ``skipped``, and go on.
        dicom_window: window for DICOM inputs (see :func:`medseg.data.load_samples`).
    """
    out_dir = Path(out_dir)
    results = []
    for path, sub in files:
        try:
            results.append(_predict_file(predictor, path, out_dir / sub, prompt_masks, dicom_window))
        except InvalidInputError as exc:
            if on_error != "skip":
                raise
            if skipped is not None:
                skipped.append((path, exc.problem))
        if progress is not None:
            progress(1)
    return results


def _predict_file(predictor: Predictor | UniversalPredictor, path: Path, out_dir: Path,
                  prompt_masks: dict[Path, Path] | None, dicom_window: DicomWindow) -> FilePrediction:
    reader = get_reader(path, dicom_window=dicom_window)
    vol = reader.read(path)
    images = to_uint8_rgb(vol.data, path)
    boxes = None
    if prompt_masks and path in prompt_masks:
        labels, _ = read_mask(prompt_masks[path], "nonzero")
        if labels.shape != images.shape[:3]:
            raise InvalidInputError(prompt_masks[path], f"prompt mask shape {labels.shape[1:]} differs from "
                                                        f"the image {images.shape[1:3]} of {path}")
        boxes = [boxes_from_mask(m) for m in labels]
    preds = predictor.predict(list(images), boxes)
    masks = np.stack([p.mask for p in preds])
    stem = file_stem(path)
    dest = reader.write_mask(masks[0] if masks.shape[0] == 1 else masks,
                             out_dir / f"{stem}{file_extension(path)}", source=vol)
    mid = masks.shape[0] // 2
    overlay = out_dir / f"{stem}_overlay.png"
    with atomic_path(overlay) as tmp:
        Image.fromarray(overlay_contours(images[mid], None, masks[mid])).save(tmp, format="PNG")
    p = preds[mid]
    return FilePrediction(path, dest, overlay, int(masks.shape[0]), float(masks.mean()), p.task, p.task_probability,
                          p.engine, p.confident)
