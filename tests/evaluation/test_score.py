"""score_entries: per-image rows from a predictor, cached as CSV; summarize_rows on those rows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from medseg.data import CatalogEntry
from medseg.evaluation import score_entries
from medseg.metrics import summarize_rows


class _Truth:
    """Predicts the ground truth of the entry it was made for (Dice 1) or nothing (Dice 0)."""

    def __init__(self, mask: np.ndarray | None, shape: tuple[int, int]) -> None:
        self.mask, self.shape = mask, shape

    def predict(self, images: list[np.ndarray]) -> list[SimpleNamespace]:
        return [SimpleNamespace(mask=self.mask if self.mask is not None else np.zeros(self.shape, bool))]


def _entries(tmp_path: Path) -> tuple[list[CatalogEntry], dict[str, np.ndarray]]:
    entries, truths = [], {}
    for i, ds in enumerate(["a", "a", "b"]):
        img = np.full((20, 24, 3), 40 * i, np.uint8)
        mask = np.zeros((20, 24), np.uint8)
        mask[5:12, 4 + i:15] = 255
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        Image.fromarray(mask).save(tmp_path / f"{i}_m.png")
        entries.append(CatalogEntry(tmp_path / f"{i}.png", tmp_path / f"{i}_m.png", "mod", ds, f"c{i}", "test"))
        truths[f"c{i}"] = mask > 0
    return entries, truths


def test_rows_cache_and_summary(tmp_path: Path) -> None:
    entries, truths = _entries(tmp_path)
    csv = tmp_path / "rows.csv"
    rows = score_entries(entries, lambda e: _Truth(truths[e.case_id] if e.dataset == "a" else None, (20, 24)),
                         csv_path=csv, columns=lambda e: {"subset": e.dataset.upper()})
    assert [float(r["dice"]) for r in rows] == [1.0, 1.0, 0.0] and rows[2]["subset"] == "B"
    assert csv.is_file()
    # a second call reads the cache: the predictor is never asked
    assert score_entries(entries, lambda e: (_ for _ in ()).throw(AssertionError("recomputed")), csv_path=csv) == rows
    summary = summarize_rows(rows, by=("dataset",))
    assert [(g["dataset"], g["n"], g["dice_mean"]) for g in summary] == [("a", 2, 1.0), ("b", 1, 0.0),
                                                                         ("all", 3, 2 / 3)]


def test_experiments_score_like_medseg_evaluate(tmp_path: Path) -> None:
    """``score_entries`` (experiments, in memory) and ``evaluate_folders`` (``medseg evaluate``, files) give the
    same per-image metrics, distances in the image's spacing: a NIfTI at 2 mm doubles HD95 and keeps Dice."""
    from dataclasses import replace

    import nibabel as nib

    from medseg.data import load_samples, read_mask
    from medseg.evaluation.compare import evaluate_folders

    gt = np.zeros((24, 20), np.uint8)
    gt[4:14, 3:12] = 1
    pred = np.zeros_like(gt)
    pred[6:16, 3:10] = 1
    affine = np.diag([2.0, 2.0, 1.0, 1.0])
    for name, data in (("case.nii.gz", np.full((24, 20, 1), 90, np.uint8)), ("case_mask.nii.gz", gt[..., None])):
        nib.save(nib.Nifti1Image(data, affine), tmp_path / name)
    (tmp_path / "pred").mkdir()
    nib.save(nib.Nifti1Image(pred[..., None], affine), tmp_path / "pred" / "case.nii.gz")
    entry = CatalogEntry(tmp_path / "case.nii.gz", tmp_path / "case_mask.nii.gz", "ct", "d", "case", "test")
    oriented = load_samples(entry.image, entry.mask, mask_mode="nonzero")[0]
    file_pred, _ = read_mask(tmp_path / "pred" / "case.nii.gz", "nonzero")
    in_memory = score_entries([entry], lambda e: _Truth(file_pred[0] > 0, oriented.image.shape[:2]))[0]
    from_files = evaluate_folders(tmp_path / "pred", tmp_path / "case_mask.nii.gz", tmp_path / "eval",
                                  mask_mode="nonzero").rows[0]
    for k in ("dice", "nsd", "hd95"):
        assert np.isclose(float(in_memory[k]), float(from_files[k])), k
    pixels = score_entries([entry], lambda e: _Truth(file_pred[0] > 0, oriented.image.shape[:2]),
                           load=lambda e: [replace(oriented, spacing=(1.0, 1.0))])[0]
    assert np.isclose(float(in_memory["hd95"]), 2 * float(pixels["hd95"]))


def test_score_masks_scores_an_image_as_one_row_and_a_volume_per_slice() -> None:
    from medseg.evaluation import score_masks
    from medseg.metrics import MetricConfig, SegmentationMetric

    rng = np.random.default_rng(0)
    gt = rng.random((3, 12, 12)) > 0.5
    pred = rng.random((3, 12, 12)) > 0.5
    metric = SegmentationMetric(MetricConfig(tolerance=2.0))
    score_masks(metric, pred, gt, spacing=(1.0, 1.0), case="vol", modality="ct", dataset="d")
    score_masks(metric, pred[1], gt[1], spacing=(1.0, 1.0), case="img", modality="ct", dataset="d")
    rows = metric.rows
    assert [r["case"] for r in rows] == ["vol_z000", "vol_z001", "vol_z002", "img"]
    assert rows[1]["dice"] == rows[3]["dice"]  # a slice scores as the same image alone
    with pytest.raises(ValueError, match="differ in shape"):
        score_masks(metric, pred, gt[:2], spacing=(1.0, 1.0), case="bad", modality="ct", dataset="d")
