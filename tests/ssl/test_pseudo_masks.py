"""Otsu pseudo-masks on disk and their quality against the ground truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from medseg.data import CatalogEntry
from medseg.ssl.pseudo_masks import pseudo_mask_path, pseudo_mask_quality, write_pseudo_masks


def _entry(tmp_path: Path, name: str, bright_disc: bool = True) -> CatalogEntry:
    """A dark image with a bright disc (or the inverse) and the disc as ground truth."""
    yy, xx = np.mgrid[0:40, 0:48]
    disc = (yy - 20) ** 2 + (xx - 24) ** 2 <= 100
    img = np.where(disc, 200, 40).astype(np.uint8) if bright_disc else np.where(disc, 40, 200).astype(np.uint8)
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "gt").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "img" / f"{name}.png"), np.dstack([img] * 3))
    cv2.imwrite(str(tmp_path / "gt" / f"{name}.png"), disc.astype(np.uint8) * 255)
    return CatalogEntry(tmp_path / "img" / f"{name}.png", tmp_path / "gt" / f"{name}.png", "dermoscopy", "toy", name)


def test_pseudo_masks_are_written_once_and_replace_the_mask(tmp_path: Path) -> None:
    entries = [_entry(tmp_path, "a"), _entry(tmp_path, "b", bright_disc=False)]
    out = write_pseudo_masks(entries, tmp_path / "pseudo")
    assert [e.mask for e in out] == [pseudo_mask_path(tmp_path / "pseudo", e) for e in entries]
    gt = cv2.imread(str(entries[0].mask), cv2.IMREAD_GRAYSCALE) > 0
    for e in out:  # auto polarity: the object inside the frame, bright or dark
        assert np.array_equal(cv2.imread(str(e.mask), cv2.IMREAD_GRAYSCALE) > 0, gt)
    stamp = out[0].mask.stat().st_mtime_ns
    write_pseudo_masks(entries, tmp_path / "pseudo")  # cached: nothing rewritten
    assert out[0].mask.stat().st_mtime_ns == stamp


def test_quality_per_polarity_rule(tmp_path: Path) -> None:
    rows = pseudo_mask_quality([_entry(tmp_path, "a"), _entry(tmp_path, "b", bright_disc=False)])
    by = {(r["case_id"], r["polarity"]): r for r in rows}
    assert by[("a", "bright")]["iou"] == 1.0 and by[("a", "dark")]["iou"] == 0.0 and by[("a", "auto")]["iou"] == 1.0
    assert by[("b", "bright")]["iou"] == 0.0 and by[("b", "dark")]["iou"] == 1.0 and by[("b", "auto")]["dice"] == 1.0
