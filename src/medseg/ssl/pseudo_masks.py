"""MedSASS pseudo-labels: the Otsu mask of every unlabeled image, written once as PNG, and how good a teacher Otsu is.

:func:`write_pseudo_masks` turns catalog entries into entries whose ``mask`` is the image's Otsu pseudo-mask
(:func:`medseg.ops.otsu_pseudo_mask`: BT.601 grey, 256-bin Otsu, polarity ``bright``/``dark``/``auto``, optional
:class:`medseg.ops.Cleanup`), so that MedSASS's end-to-end pre-training is ordinary segmentation training
(``medseg train``: caches, native resolution, DDP, resume) on those entries. Files are written atomically and kept:
a second call only writes what is missing (a changed image or rule needs a new folder — the folder name should
encode the rule, as the MedSASS experiment's does).

:func:`pseudo_mask_quality` scores the pseudo-masks of labelled images against their ground truth, per image and
polarity rule (IoU and Dice), for the report's "where Otsu fails" table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from medseg.data import CatalogEntry
from medseg.data.loading import load_samples
from medseg.errors import InvalidInputError
from medseg.metrics.overlap import confusion, dice_from_confusion, iou_from_confusion
from medseg.ops.otsu import Cleanup, Polarity, otsu_pseudo_mask
from medseg.utils.atomic import atomic_path


def _image(e: CatalogEntry) -> np.ndarray:
    """The (H, W, 3) uint8 image of a 2-D entry."""
    samples = load_samples(e.image, None, modality=e.modality, dataset=e.dataset, case_id=e.case_id)
    if len(samples) != 1:
        raise InvalidInputError(e.image, f"pseudo-masks need 2-D images; this file holds {len(samples)} slices")
    return samples[0].image


def pseudo_mask_path(folder: str | Path, e: CatalogEntry) -> Path:
    """Where the pseudo-mask of ``e`` lives under ``folder``: ``<modality>/<dataset>/<case_id>.png``."""
    return Path(folder) / e.modality / e.dataset / f"{e.case_id}.png"


def write_pseudo_masks(entries: Iterable[CatalogEntry], folder: str | Path, *, polarity: Polarity = "auto",
                       cleanup: Cleanup | None = None,
                       progress: Callable[[int], None] | None = None) -> list[CatalogEntry]:
    """Write the Otsu pseudo-mask of every entry's image (those not yet written) and return the entries with
    ``mask`` pointing at them (ground-truth masks, if any, are not read).

    Args:
        entries: catalog entries (2-D images).
        folder: output folder (PNG, 0/255 uint8, one per entry: :func:`pseudo_mask_path`).
        polarity, cleanup: the pseudo-mask rule (:func:`medseg.ops.otsu_pseudo_mask`).
        progress: called with 1 after each entry.

    Raises:
        InvalidInputError: an unreadable image or a multi-slice file (naming the file).
    """
    out = []
    for e in entries:
        path = pseudo_mask_path(folder, e)
        if not path.is_file():
            mask = otsu_pseudo_mask(_image(e), polarity, cleanup=cleanup)
            with atomic_path(path) as tmp:
                if not cv2.imwrite(str(tmp), mask.astype(np.uint8) * 255):
                    raise OSError(f"could not write {path}")
        out.append(replace(e, mask=path))
        if progress is not None:
            progress(1)
    return out


def pseudo_mask_quality(entries: Iterable[CatalogEntry], polarities: Sequence[Polarity] = ("bright", "dark", "auto"),
                        *, cleanup: Cleanup | None = None) -> list[dict[str, object]]:
    """IoU and Dice of each polarity rule's pseudo-mask against the ground truth, per labelled image.

    Returns:
        Rows ``{modality, dataset, case_id, polarity, iou, dice, foreground}`` (``foreground``: the pseudo-mask's
        share of the image); entries without a mask are skipped.
    """
    rows: list[dict[str, object]] = []
    for e in entries:
        if e.mask is None:
            continue
        s = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, case_id=e.case_id,
                         mask_mode="nonzero")
        if len(s) != 1:
            raise InvalidInputError(e.image, f"pseudo-masks need 2-D images; this file holds {len(s)} slices")
        gt = s[0].mask > 0
        for pol in polarities:
            pred = otsu_pseudo_mask(s[0].image, pol, cleanup=cleanup)
            c = confusion(pred, gt)
            rows.append({"modality": e.modality, "dataset": e.dataset, "case_id": e.case_id, "polarity": pol,
                         "iou": iou_from_confusion(c), "dice": dice_from_confusion(c),
                         "foreground": float(pred.mean())})
    return rows
