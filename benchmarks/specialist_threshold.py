"""Would the shipped ``universal`` model's specialists segment better at another probability threshold than 0.5?

Each specialist (a native-resolution U-Net, or the vessel specialist's two averaged U-Nets at two scales) thresholds
its sigmoid at 0.5. Averaging logits across members and scales can move the best cut, and vessel and membrane Dice
are sensitive to it. This script segments the *validation* images of each specialist's datasets in the reference
split once (native resolution, the true task), keeps the probability maps, and scores the Dice at every threshold of
``--thresholds``.

Decision rule, fixed before the run: a specialist gets its own threshold only if the best threshold's validation
Dice (mean over the target's datasets) beats 0.5's by at least ``--min-gain`` (0.005: below that, 4–20 validation
images cannot tell it from noise). ``--test`` then prints the test images' Dice at 0.5 and at that threshold
(reported, never used to decide).

    python benchmarks/specialist_threshold.py [--target retinal-vessel …] [--test] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from _common import emit, reference_split
from medseg.data import load_samples
from medseg.inference import Predictor
from medseg.metrics.overlap import dice
from medseg.metrics.segmentation import group_means
from medseg.models.io import load_model
from medseg.weights import shipped_model_folder

REPO = Path(__file__).resolve().parents[1]


def datasets_of(target: str, target_of: dict[str, str], datasets: set[str]) -> list[str]:
    """The datasets whose task is ``target``: those the config maps to it, or the one of that name."""
    return sorted(d for d in datasets if target_of.get(d, d) == target)


def dice_rows(predictor: Predictor, entries: list, thresholds: np.ndarray) -> list[dict]:
    """Per image and threshold: dataset, case, threshold and the Dice of the prediction's probability map
    thresholded there (each image segmented once)."""
    rows = []
    for e in entries:
        for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero"):
            prob, gt = predictor.predict([s.image])[0].prob, s.binary_mask()
            rows += [{"dataset": e.dataset, "case": s.case_id, "threshold": float(t), "dice": dice(prob > t, gt)}
                     for t in thresholds]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", default=None,
                    help="specialist target(s) of the shipped model (default: all of them)")
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml",
                    help="the config whose data.target_of names each target's datasets")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data")
    ap.add_argument("--thresholds", type=float, nargs=3, default=[0.30, 0.70, 0.05], metavar=("LO", "HI", "STEP"))
    ap.add_argument("--min-gain", type=float, default=0.005)
    ap.add_argument("--test", action="store_true", help="after the decision, score the test images too")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lo, hi, step = args.thresholds
    thresholds = np.round(np.arange(lo, hi + step / 2, step), 4)
    base = int(np.argmin(np.abs(thresholds - 0.5)))
    if abs(thresholds[base] - 0.5) > 1e-6:
        raise SystemExit(f"--thresholds {lo} {hi} {step} must include 0.5 (the baseline)")
    target_of = yaml.safe_load(args.config.read_text())["data"].get("target_of", {})
    split = reference_split(args.data)
    folder = shipped_model_folder("universal") / "specialists"
    targets = args.target or sorted(p.name for p in folder.iterdir() if p.is_dir())
    curve, summary = [], []
    for target in targets:
        names = datasets_of(target, target_of, {e.dataset for e in split})
        predictor = Predictor.for_model(load_model(folder / target))
        val = dice_rows(predictor, [e for e in split if e.split == "val" and e.dataset in names], thresholds)
        if not val:
            raise SystemExit(f"{target}: no validation images of {names} under {args.data}")
        means = list(group_means(val, "threshold", within="dataset").values())  # every dataset weighs the same
        best = int(np.argmax(means))
        gain = means[best] - means[base]
        row = {"target": target, "datasets": " + ".join(names), "val_images": len(val) // len(thresholds),
               "val_dice_at_0.5": means[base], "best_threshold": float(thresholds[best]),
               "val_dice_at_best": means[best], "gain": gain, "adopted": gain >= args.min_gain}
        curve += [{"target": target, "split": "val", "threshold": float(t), "dice": m}
                  for t, m in zip(thresholds, means, strict=True)]
        if args.test:
            test = group_means(dice_rows(predictor, [e for e in split if e.split == "test" and e.dataset in names],
                                         thresholds), "threshold", within="dataset")
            row |= {"test_dice_at_0.5": test[float(thresholds[base])],
                    "test_dice_at_best": test[float(thresholds[best])]}
        summary.append(row)
        print(f"{target}: validation Dice {means[base]:.4f} at 0.5, {means[best]:.4f} at {thresholds[best]:g} "
              f"({gain:+.4f}; {'adopted' if row['adopted'] else 'not adopted'}: needs +{args.min_gain:g})", flush=True)
    emit("Specialist validation Dice by threshold", curve, args.out)
    emit("Specialist threshold summary", summary, args.out)


if __name__ == "__main__":
    main()
