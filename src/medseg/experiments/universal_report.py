"""Tables and figures of the universal model's report (:mod:`medseg.experiments.universal`).

Every table reads per-image score rows (``score_entries``' form: ``modality``, ``dataset``, ``dice``, ``nsd``, …)
keyed by method name. The headline number is the **mean over modalities of the modality's dataset means** — the
form in which the reference table gives LiteMedSAM with ground-truth boxes 0.694 — so a 400-image dataset does not
outweigh a 30-image one of the same modality.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: the methods in the order the tables show them (others follow)
ORDER = ("universal", "head", "specialist", "fast", "lite_medsam_gt_box", "lite_medsam_image_box", "reference_unet")


def _methods(scores: dict[str, list[dict[str, str]]]) -> list[str]:
    return [m for m in ORDER if m in scores] + sorted(m for m in scores if m not in ORDER)


def _mean(rows: Sequence[dict[str, str]], metric: str) -> float:
    vals = [float(r[metric]) for r in rows if r.get(metric, "") not in ("", "nan")]
    return float(np.mean(vals)) if vals else float("nan")


def dataset_means(rows: Sequence[dict[str, str]], metric: str = "dice") -> dict[tuple[str, str], float]:
    """(modality, dataset) → mean ``metric`` over its images."""
    keys = sorted({(r["modality"], r["dataset"]) for r in rows})
    return {k: _mean([r for r in rows if (r["modality"], r["dataset"]) == k], metric) for k in keys}


def modality_means(rows: Sequence[dict[str, str]], metric: str = "dice") -> dict[str, float]:
    """modality → mean of its datasets' means."""
    per = dataset_means(rows, metric)
    mods = sorted({m for m, _ in per})
    return {m: float(np.nanmean([v for (mm, _), v in per.items() if mm == m])) for m in mods}


def dataset_table(scores: dict[str, list[dict[str, str]]]) -> list[dict[str, Any]]:
    """One row per (modality, dataset) of the test split: images, then mean Dice and NSD of every method (NaN
    where a method did not segment that dataset); the last row is the unweighted mean over datasets."""
    methods = _methods(scores)
    keys = sorted({(r["modality"], r["dataset"]) for rows in scores.values() for r in rows})
    means = {(m, metric): dataset_means(scores[m], metric) for m in methods for metric in ("dice", "nsd")}
    out: list[dict[str, Any]] = []
    for k in keys:
        row: dict[str, Any] = {"modality": k[0], "dataset": k[1],
                               "n": max(sum((r["modality"], r["dataset"]) == k for r in rows)
                                        for rows in scores.values())}
        for m in methods:
            for metric in ("dice", "nsd"):
                row[f"{metric}_{m}"] = means[(m, metric)].get(k, float("nan"))
        out.append(row)
    if out:
        last: dict[str, Any] = {"modality": "mean over datasets", "dataset": "", "n": sum(r["n"] for r in out)}
        for col in out[0]:
            if col.startswith(("dice_", "nsd_")):
                last[col] = float(np.nanmean([r[col] for r in out]))
        out.append(last)
    return out


def modality_table(scores: dict[str, list[dict[str, str]]]) -> list[dict[str, Any]]:
    """One row per modality (mean of its dataset means of Dice, per method) and the mean over modalities."""
    methods = _methods(scores)
    per = {m: modality_means(scores[m]) for m in methods}
    mods = sorted({k for v in per.values() for k in v})
    out: list[dict[str, Any]] = [{"modality": mod, **{f"dice_{m}": per[m].get(mod, float("nan")) for m in methods}}
                                 for mod in mods]
    if out:
        out.append({"modality": "mean over modalities",
                    **{f"dice_{m}": float(np.nanmean([r[f"dice_{m}"] for r in out])) for m in methods}})
    return out


def task_accuracy(rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """Per dataset: images, share segmented as their true task, the wrong tasks chosen, and the mean task
    probability; the last row covers every image."""
    out = []
    for ds in sorted({(r["modality"], r["dataset"]) for r in rows}):
        sub = [r for r in rows if (r["modality"], r["dataset"]) == ds]
        wrong = [r for r in sub if r["task"] != r["true_task"]]
        out.append({"modality": ds[0], "dataset": ds[1], "n": len(sub), "accuracy": 1 - len(wrong) / len(sub),
                    "chosen_when_wrong": ", ".join(sorted({r["task"] for r in wrong})),
                    "mean_probability": _mean(sub, "task_probability")})
    if rows:
        out.append({"modality": "all", "dataset": "", "n": len(rows),
                    "accuracy": float(np.mean([r["task"] == r["true_task"] for r in rows])), "chosen_when_wrong": "",
                    "mean_probability": _mean(rows, "task_probability")})
    return out


def reference_scores(folder: str | Path, test: Sequence[Any]) -> dict[str, list[dict[str, str]]]:
    """``{"reference_unet": rows}``: the per-dataset reference U-Nets' per-image rows (``per_dataset_*.csv`` of
    ``benchmarks/train_real_baseline.py``) restricted to the cases of ``test``; ``{}`` if the folder has none."""
    folder = Path(folder)
    wanted = {(e.dataset, e.case_id) for e in test}
    rows = []
    for path in sorted(folder.glob("per_dataset_*.csv")):
        with open(path, newline="") as f:
            rows += [r for r in csv.DictReader(f) if (r["dataset"], r["case"]) in wanted]
    return {"reference_unet": rows} if rows else {}


def baseline_scores(folder: str | Path, test: Sequence[Any]) -> dict[str, list[dict[str, str]]]:
    """LiteMedSAM's per-image rows on ``test`` from ``benchmarks/eval_lite_medsam.py``'s CSVs in ``folder``
    (``lite_medsam_gt_box`` and ``lite_medsam_image_box``).

    Raises:
        FileNotFoundError: a CSV is missing or lacks some of the test images (it was made for another split).
    """
    wanted = {(e.dataset, e.case_id) for e in test}
    out = {}
    for method, name in (("lite_medsam_gt_box", "gt_box"), ("lite_medsam_image_box", "whole_image")):
        path = Path(folder) / f"lite_medsam_{name}_per_image.csv"
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if (r["dataset"], r["case"]) in wanted]
        if len(rows) != len(wanted):
            raise FileNotFoundError(f"{path}: has {len(rows)} of the {len(wanted)} test images (another split?)")
        out[method] = rows
    return out


def learning_curve(run: str | Path, dest: str | Path) -> Path | None:
    """Plot a training run's logged training loss and validation Dice (Lightning's ``logs/version_*/metrics.csv``,
    every restart) against the step; ``None`` when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train: dict[int, float] = {}
    val: dict[int, float] = {}
    for path in sorted(Path(run).glob("logs/version_*/metrics.csv")):
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                step = int(float(r["step"]))
                if r.get("train/loss"):
                    train[step] = float(r["train/loss"])
                if r.get("val/dice"):
                    val[step] = float(r["val/dice"])
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        steps = sorted(train)
        loss = np.asarray([train[s] for s in steps])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, color="tab:blue", label="training loss (smoothed)")
        ax.set_ylabel("loss")
    ax2 = ax.twinx()
    if val:
        ax2.plot(sorted(val), [val[s] for s in sorted(val)], "o-", color="tab:red", label="validation Dice")
        ax2.set_ylabel("validation Dice")
    ax.set_xlabel("step")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    fig.tight_layout()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)
    return dest
