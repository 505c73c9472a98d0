"""Predict whole files: any supported image/volume → a mask file in the input's format + a PNG overlay."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from medseg.data.geometry import boxes_from_mask
from medseg.data.loading import case_key, file_stem, read_mask, supported_files
from medseg.data.normalize import to_uint8_rgb
from medseg.data.readers import get_reader
from medseg.data.readers.base import DicomWindow, file_extension
from medseg.errors import InvalidInputError
from medseg.inference.predictor import Predictor
from medseg.inference.spool import EmbeddingSpool
from medseg.ops.boundary import overlay_contours
from medseg.utils.atomic import atomic_path

if TYPE_CHECKING:
    from medseg.inference.universal import UniversalPredictor


#: folders of a catalogue that hold the masks of a sibling ``images`` folder (not inputs to segment)
CATALOG_MASK_FOLDERS = frozenset({"masks", "labels", "gts"})
#: lossy input formats whose masks are written as PNG
_LOSSY = frozenset({".jpg", ".jpeg"})
#: files whose task prior batch and auto routing estimate together (two passes per window; bounds the spool)
ROUTING_WINDOW = 512


def collect_inputs(inputs: Iterable[str | Path], not_inputs: list[Path] | None = None
                   ) -> list[tuple[Path, Path]]:
    """(file, output sub-folder) pairs: files given directly (sub-folder ``.``), plus every supported file under
    given folders (recursive, sorted; sub-folder = its folder relative to the given one without ``images`` parts).

    Every readable file is an input, whatever its name (a ``_mask`` suffix only matters where masks are paired with
    images). The one exception is a catalogue's mask folder — ``masks``/``labels``/``gts`` beside an ``images``
    folder — whose files are the images' masks: they are appended to ``not_inputs`` so the caller can say so.

    Raises:
        InvalidInputError: an input does not exist.
    """
    out: list[tuple[Path, Path]] = []
    hidden: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in supported_files(p):
                parts = f.relative_to(p).parts[:-1]
                if any(part.startswith(".") for part in f.relative_to(p).parts):
                    if not_inputs is not None:  # hidden files (e.g. macOS ._ resource forks) are no images
                        hidden.append(f)
                    continue
                if _in_catalog_mask_folder(f, p):
                    if not_inputs is not None:
                        not_inputs.append(f)
                    continue
                rel = [part for part in parts if part.lower() != "images"]
                out.append((f, Path(*rel) if rel else Path(".")))
        elif p.exists():
            out.append((p, Path(".")))
        else:
            raise InvalidInputError(p, "no such file or folder")
    if not_inputs is not None:
        not_inputs += hidden
    return out


def _in_catalog_mask_folder(f: Path, root: Path) -> bool:
    """``f`` lies in a ``masks``/``labels``/``gts`` folder (below ``root``) that has an ``images`` sibling."""
    for folder in f.relative_to(root).parents:
        if folder.name.lower() in CATALOG_MASK_FOLDERS and (root / folder).parent.joinpath("images").is_dir():
            return True
    return False


def output_names(files: Sequence[tuple[Path, Path]]) -> dict[Path, Path]:
    """Input file → its outputs' path without extension, relative to the output folder (``sub/stem``; the mask
    adds the input's extension — PNG for JPEG —, the overlay ``_overlay.png``). Unique by construction: inputs whose
    masks would share a name (``case1.png`` and ``case1.jpg``) keep their extension in it (``case1_png``,
    ``case1_jpg``).

    Raises:
        InvalidInputError: two inputs still map to the same output (the same name in two input folders); the
            message lists them. Raised before any work.
    """
    def final(path: Path, base: Path) -> str:
        ext = file_extension(path)
        return str(base).lower() + (".png" if ext in _LOSSY else ext)

    base = {f: sub / file_stem(f) for f, sub in files}
    groups: dict[str, list[Path]] = {}
    for f, _ in files:
        groups.setdefault(final(f, base[f]), []).append(f)
    for members in groups.values():
        if len(members) > 1 and len({file_extension(f) for f in members}) > 1:
            for f in members:
                base[f] = base[f].with_name(f"{base[f].name}_{file_extension(f).lstrip('.').replace('.', '_')}")
    final_names: dict[str, list[Path]] = {}
    for f, _ in files:
        final_names.setdefault(final(f, base[f]), []).append(f)
        final_names.setdefault(f"{str(base[f]).lower()}_overlay.png", []).append(f)
    clashes = [m for m in final_names.values() if len(set(m)) > 1]
    if clashes:
        listed = "; ".join(" and ".join(str(f) for f in sorted(set(m))) for m in clashes[:5])
        raise InvalidInputError(clashes[0][0], f"{len(clashes)} output name(s) would be written by more than one "
                                               f"input ({listed}); rename them or segment them into separate "
                                               "output folders")
    return base


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
    note: str | None = None  # something the user should know about this file (e.g. an empty prompt mask)
    masks: np.ndarray | None = field(default=None, repr=False)  # (Z, H, W) bool, with ``keep_masks`` only


def masks_by_case(folder: str | Path) -> dict[str, Path]:
    """Every supported file under ``folder`` keyed by :func:`case_key`."""
    return {case_key(f): f for f in supported_files(folder)}


def predict_files(predictor: Predictor | UniversalPredictor, files: Sequence[tuple[Path, Path]],
                  out_dir: str | Path, *, prompt_masks: dict[Path, Path] | None = None,
                  progress: Callable[[int], None] | None = None, on_error: str = "stop",
                  skipped: list[tuple[Path, str]] | None = None,
                  dicom_window: DicomWindow = "header", keep_masks: bool = False) -> list[FilePrediction]:
    """Segment each file (every slice of a volume) and write its mask (``out_dir/<name><ext>``, the input's format;
    JPEG becomes PNG) and ``<name>_overlay.png``, ``<name>`` from :func:`output_names` (checked before any work).

    Args:
        predictor: a :class:`Predictor` or :class:`UniversalPredictor`.
        files: (input file, output sub-folder) pairs from :func:`collect_inputs`.
        out_dir: output folder.
        prompt_masks: optional image → mask file; SAM-family models then get one box per mask component
            (box-prompted mode). Without it they run prompt-free.
        on_error: ``stop`` at the first unusable input (raising its :class:`InvalidInputError`), or ``skip`` it,
            appending ``(file, problem)`` to ``skipped``, and go on.
        dicom_window: window for DICOM inputs (see :func:`medseg.data.load_samples`).
        keep_masks: also return each file's masks in memory (``FilePrediction.masks``), e.g. to score them as
            predicted (``medseg evaluate --model``).

    A :class:`UniversalPredictor` with batch or auto routing (``routing="batch"`` / ``"auto"``) makes two passes
    over each window of :data:`ROUTING_WINDOW` files (all of them when fewer): every file is read and classified
    first (``progress`` advances once per file), its embeddings spooled to a temporary folder, then every file is
    segmented under the task prior of the window (``progress`` advances again): twice as many progress steps as
    files. The window bounds the spool (about 4 MB per 2-D image); hundreds of images estimate a prior as well as
    more. Files that fail in the first pass are not part of the batch.
    """
    out_dir = Path(out_dir)
    names = output_names(files)
    results = []
    if not getattr(predictor, "batch_routed", False):
        for path, _ in files:
            result = _guard(lambda p=path: _predict_file(predictor, p, out_dir / names[p], prompt_masks, dicom_window),
                            path, on_error, skipped)
            if result is not None:
                results.append(result if keep_masks else replace(result, masks=None))
            if progress is not None:
                progress(1)
        return results
    for start in range(0, len(files), ROUTING_WINDOW):
        results += _predict_window(predictor, files[start:start + ROUTING_WINDOW], out_dir, names, prompt_masks,
                                   on_error, skipped, progress, dicom_window, keep_masks)
    return results


def _predict_window(predictor: UniversalPredictor, files: list[tuple[Path, Path]], out_dir: Path,
                    names: dict[Path, Path], prompt_masks: dict[Path, Path] | None, on_error: str,
                    skipped: list[tuple[Path, str]] | None, progress: Callable[[int], None] | None,
                    dicom_window: DicomWindow, keep_masks: bool) -> list[FilePrediction]:
    """The two passes of batch routing over one window of ``files`` (see :func:`predict_files`)."""
    results = []
    with EmbeddingSpool() as spool:
        probs: dict[Path, np.ndarray] = {}
        for key, (path, _) in enumerate(files):
            p = _guard(lambda k=key, f=path: predictor.encode_into(list(_read_images(f, dicom_window)[2]), spool, k),
                       path, on_error, skipped)
            if p is not None:
                probs[path] = p
            if progress is not None:
                progress(1)
        prior = predictor.batch_prior(np.concatenate(list(probs.values()))) if probs else None
        for key, (path, _) in enumerate(files):
            if path in probs:
                result = _guard(lambda k=key, f=path: _predict_file(
                    predictor, f, out_dir / names[f], prompt_masks, dicom_window, embeddings=spool.get(k),
                    task_prior=prior), path, on_error, skipped)
                if result is not None:
                    results.append(result if keep_masks else replace(result, masks=None))
            if progress is not None:
                progress(1)
    return results


def _guard(work: Callable[[], object], path: Path, on_error: str, skipped: list[tuple[Path, str]] | None) -> Any:
    """``work()``, or with ``on_error="skip"`` ``None`` when it raises :class:`InvalidInputError` (the file and
    its problem appended to ``skipped``)."""
    try:
        return work()
    except InvalidInputError as exc:
        if on_error != "skip":
            raise
        if skipped is not None:
            skipped.append((path, exc.problem))
        return None


def _read_images(path: Path, dicom_window: DicomWindow) -> tuple[Any, Any, np.ndarray]:
    """(reader, volume, (Z, H, W, 3) uint8 images) of an input file."""
    reader = get_reader(path, dicom_window=dicom_window)
    vol = reader.read(path)
    return reader, vol, to_uint8_rgb(vol.data, path)


def _predict_file(predictor: Predictor | UniversalPredictor, path: Path, name: Path,
                  prompt_masks: dict[Path, Path] | None, dicom_window: DicomWindow,
                  **batch: Any) -> FilePrediction:
    reader, vol, images = _read_images(path, dicom_window)
    boxes, note = None, None
    if prompt_masks and path in prompt_masks:
        labels, _ = read_mask(prompt_masks[path], "nonzero")
        if labels.shape != images.shape[:3]:
            raise InvalidInputError(prompt_masks[path], f"prompt mask shape {labels.shape[1:]} differs from "
                                                        f"the image {images.shape[1:3]} of {path}")
        boxes = [boxes_from_mask(m) for m in labels]
        if not any(len(b) for b in boxes):
            note = f"its prompt mask {prompt_masks[path]} has no foreground: segmented prompt-free"
    preds = predictor.predict(list(images), boxes, **batch)
    masks = np.stack([p.mask for p in preds])
    dest = reader.write_mask(masks[0] if masks.shape[0] == 1 else masks,
                             name.with_name(name.name + file_extension(path)), source=vol)
    mid = masks.shape[0] // 2
    overlay = name.with_name(f"{name.name}_overlay.png")
    with atomic_path(overlay) as tmp:
        Image.fromarray(overlay_contours(images[mid], None, masks[mid])).save(tmp, format="PNG")
    p = preds[mid]
    return FilePrediction(path, dest, overlay, int(masks.shape[0]), float(masks.mean()), p.task, p.task_probability,
                          p.engine, p.confident, note, masks)
