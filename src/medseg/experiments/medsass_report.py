"""The MedSASS report's tables and figures, from the per-image score rows of every fine-tuning run.

Rows (``scores/<arch>/<start>/f<fraction>-s<seed>.csv``, strings as in the CSV) carry ``arch``, ``start``,
``fraction``, ``seed``, ``modality``, ``dataset``, ``case`` and the metrics. Aggregation: per seed, the mean over a
modality's test images; then mean ± std over seeds; "mean over modalities" averages the modality means of one seed
first, so every modality weighs the same whatever its number of images.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data import CatalogEntry
from medseg.metrics import group_means
from medseg.stats import paired_test

MEAN = "mean over modalities"
SSL_BASELINES = ("simsiam", "byol", "dino")


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def results_table(rows: Sequence[dict[str, str]], metrics: Sequence[str] = ("dice", "iou", "nsd")
                  ) -> list[dict[str, Any]]:
    """One row per (arch, start, fraction, modality incl. the mean over modalities): ``<metric>_mean`` and
    ``<metric>_std`` over seeds, and ``seeds``."""
    # metric → (arch, start, fraction, seed, modality) → mean over the modality's images
    cell = {m: group_means(rows, ("arch", "start", "fraction", "seed", "modality"), m) for m in metrics}
    per_seed: dict[tuple[str, str, str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for a, s, f, seed, mod in cell[metrics[0]]:
        per_seed[(a, s, f, mod)][seed] = {m: cell[m][(a, s, f, seed, mod)] for m in metrics}
    mods = sorted({k[3] for k in per_seed})
    for a, s, f in sorted({k[:3] for k in per_seed}):
        seeds = sorted({seed for mod in mods for seed in per_seed.get((a, s, f, mod), {})})
        per_seed[(a, s, f, MEAN)] = {
            seed: {m: float(np.nanmean([per_seed[(a, s, f, mod)][seed][m] for mod in mods
                                        if seed in per_seed.get((a, s, f, mod), {})])) for m in metrics}
            for seed in seeds}
    out = []
    for (a, s, f, mod), by_seed in sorted(per_seed.items(), key=lambda kv: (kv[0][0], kv[0][1], float(kv[0][2]),
                                                                            kv[0][3] == MEAN, kv[0][3])):
        row: dict[str, Any] = {"arch": a, "start": s, "fraction": f, "modality": mod, "seeds": len(by_seed)}
        for m in metrics:
            v = np.array([x[m] for x in by_seed.values()], dtype=float)
            ok = v[np.isfinite(v)]
            row[f"{m}_mean"] = float(ok.mean()) if len(ok) else float("nan")
            row[f"{m}_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else 0.0 if len(ok) else float("nan")
        out.append(row)
    return out


def _lookup(results: Sequence[dict[str, Any]], arch: str, start: str, fraction: str, modality: str = MEAN
            ) -> float:
    for r in results:
        if (r["arch"], r["start"], r["fraction"], r["modality"]) == (arch, start, fraction, modality):
            return float(r["dice_mean"])
    return float("nan")


def targets_table(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's three targets per architecture, each with the measured values, the gap and met / missed.

    1. MedSASS end-to-end beats scratch at 10 % labels on the mean over modalities and on ≥ 5 modalities;
    2. end-to-end beats encoder-only MedSASS on the mean (at every label fraction);
    3. end-to-end ≥ the best of SimSiam / BYOL / DINO on the mean at 1 % and 10 %.
    """
    out: list[dict[str, Any]] = []
    archs = sorted({r["arch"] for r in results})
    starts = {r["start"] for r in results}
    fractions = sorted({r["fraction"] for r in results}, key=float)
    mods = sorted({r["modality"] for r in results if r["modality"] != MEAN})
    for a in archs:
        if {"medsass", "scratch"} <= starts and "0.1" in fractions:
            e2e, scratch = _lookup(results, a, "medsass", "0.1"), _lookup(results, a, "scratch", "0.1")
            wins = sum(_lookup(results, a, "medsass", "0.1", m) > _lookup(results, a, "scratch", "0.1", m)
                       for m in mods)
            out.append({"arch": a, "target": "MedSASS > scratch at 10 %: mean, and ≥ 5 modalities",
                        "medsass": e2e, "reference": scratch, "gap": e2e - scratch,
                        "detail": f"better on {wins}/{len(mods)} modalities",
                        "met": bool(e2e > scratch and wins >= min(5, len(mods)))})
        if {"medsass", "medsass_encoder"} <= starts:
            for f in fractions:
                e2e, enc = _lookup(results, a, "medsass", f), _lookup(results, a, "medsass_encoder", f)
                out.append({"arch": a, "target": f"end-to-end > encoder-only at {float(f):.0%}", "medsass": e2e,
                            "reference": enc, "gap": e2e - enc, "detail": "", "met": bool(e2e > enc)})
        ssl = [s for s in SSL_BASELINES if s in starts]
        if "medsass" in starts and ssl:
            for f in (x for x in fractions if float(x) in (0.01, 0.1)):
                vals = {s: _lookup(results, a, s, f) for s in ssl}
                best = max(vals, key=lambda s: vals[s])
                e2e = _lookup(results, a, "medsass", f)
                out.append({"arch": a, "target": f"MedSASS ≥ best SSL at {float(f):.0%}", "medsass": e2e,
                            "reference": vals[best], "gap": e2e - vals[best], "detail": f"best: {best}",
                            "met": bool(e2e >= vals[best])})
    return out


def paired_table(rows: Sequence[dict[str, str]], metric: str = "dice") -> list[dict[str, Any]]:
    """Paired tests over the test images (each image's metric averaged over seeds): every start against scratch,
    and end-to-end against encoder-only MedSASS, per arch and label fraction."""
    per: dict[tuple[str, str, str], dict[tuple[str, str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        per[(r["arch"], r["start"], r["fraction"])][(r["modality"], r["dataset"], r["case"])].append(_f(r[metric]))
    mean = {k: {img: float(np.nanmean(v)) for img, v in d.items()} for k, d in per.items()}
    pairs = [(s, "scratch") for s in ("medsass", "medsass_encoder", *SSL_BASELINES)]
    pairs.append(("medsass", "medsass_encoder"))
    out = []
    for a, f in sorted({(k[0], k[2]) for k in mean}, key=lambda x: (x[0], float(x[1]))):
        for s, ref in pairs:
            if (a, s, f) not in mean or (a, ref, f) not in mean:
                continue
            common = sorted(set(mean[(a, s, f)]) & set(mean[(a, ref, f)]))
            x = [mean[(a, s, f)][i] for i in common]
            y = [mean[(a, ref, f)][i] for i in common]
            ok = [(p, q) for p, q in zip(x, y, strict=True) if np.isfinite(p) and np.isfinite(q)]
            if len(ok) < 2:
                continue
            t = paired_test([p for p, _ in ok], [q for _, q in ok])
            out.append({"arch": a, "fraction": f, "start": s, "vs": ref, "n": t.n, f"{metric}_start": t.mean_a,
                        f"{metric}_vs": t.mean_b, "diff": t.mean_diff, "p_t": t.p_t, "p_wilcoxon": t.p_wilcoxon,
                        "stars": t.stars})
    return out


def quality_summary(path: Path) -> list[dict[str, Any]]:
    """``pseudo/quality.csv`` → mean IoU / Dice / foreground share per (modality, dataset, polarity rule), and
    which rule is best per dataset."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cell: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cell[(r["modality"], r["dataset"])][r["polarity"]].append(r)
    out = []
    for (mod, ds), by in sorted(cell.items()):
        row: dict[str, Any] = {"modality": mod, "dataset": ds, "n": len(next(iter(by.values())))}
        for pol, rs in by.items():
            row[f"iou_{pol}"] = float(np.mean([_f(r["iou"]) for r in rs]))
        for pol, rs in by.items():
            row[f"fg_{pol}"] = float(np.mean([_f(r["foreground"]) for r in rs]))
        row["best_rule"] = max(by, key=lambda p: row[f"iou_{p}"])
        out.append(row)
    return out


def learning_curves(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Mean Dice over modalities vs label fraction (log axis), one line per start (± std over seeds), one panel
    per architecture."""
    from medseg.experiments.cmmc_plots import _pyplot, _save

    plt = _pyplot()
    archs = sorted({r["arch"] for r in results})
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 3.6), squeeze=False, sharey=True)
    for ax, a in zip(axes[0], archs, strict=True):
        for s in sorted({r["start"] for r in results if r["arch"] == a}):
            pts = sorted((float(r["fraction"]), r["dice_mean"], r["dice_std"]) for r in results
                         if r["arch"] == a and r["start"] == s and r["modality"] == MEAN)
            ax.errorbar([100 * p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o",
                        capsize=3, label=s)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training images (%)")
        ax.set_title(a)
    axes[0][0].set_ylabel("Dice, mean over modalities")
    axes[0][-1].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path, plt)


def save_overlays(test: Sequence[CatalogEntry], model_dir: Path, polarity: str, cleanup: Any, path: Path, *,
                  per_modality: int, caption: str) -> Path | None:
    """A grid of test images per modality: the image, its Otsu pseudo-mask, a fine-tuned model's prediction, and the
    ground truth (contours: ground truth green, prediction red)."""
    from medseg.data import load_samples
    from medseg.evaluation.overlay import save_overlay_grid
    from medseg.inference import Predictor
    from medseg.models.io import load_model
    from medseg.ops import otsu_pseudo_mask
    from medseg.ops.boundary import overlay_contours

    if per_modality <= 0:
        return None
    loaded = load_model(model_dir)
    predictor = Predictor.for_model(loaded)
    tiles, captions = [], []
    by: dict[str, list[CatalogEntry]] = defaultdict(list)
    for e in test:
        by[e.modality].append(e)
    for mod in sorted(by):
        for e in by[mod][:per_modality]:
            s = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0]
            gt = s.binary_mask()
            pseudo = otsu_pseudo_mask(s.image, polarity, cleanup=cleanup)  # type: ignore[arg-type]
            pred = predictor.predict([s.image])[0].mask
            tiles += [s.image, overlay_contours(s.image, pred=pseudo), overlay_contours(s.image, pred=pred),
                      overlay_contours(s.image, gt=gt)]
            captions += [f"{e.dataset}/{e.case_id}", "Otsu pseudo-mask", caption, "ground truth"]
    if not tiles:
        return None
    return save_overlay_grid(tiles, captions, path, columns=4)
