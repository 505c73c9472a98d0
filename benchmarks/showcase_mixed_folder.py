"""The README showcase: one test image of every dataset in one folder, segmented by a task model with
``medseg predict`` (no prompt, no modality), then a captioned grid of the overlays and a table of the tasks chosen.

    python benchmarks/showcase_mixed_folder.py --split runs/esp-cpu/split.csv \
        --model runs/esp-cpu/classifier/model --out benchmarks/results/esp-cpu

Writes ``<folder>`` (the copied images, named ``<dataset>_<file>``), ``<folder>-pred`` (what ``medseg predict``
writes), and under ``--out``: ``predict_mixed_folder.png`` and ``predict_mixed_folder_tasks.csv`` (dataset, task
chosen, whether it is the dataset's task, Dice against the ground truth).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from PIL import Image

    from medseg.data import load_samples, read_manifest
    from medseg.evaluation import save_overlay_grid, write_csv
    from medseg.metrics import dice

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", type=Path, required=True, help="an experiment's split.csv")
    ap.add_argument("--model", type=Path, required=True, help="a task model folder (ESP-MedSAM)")
    ap.add_argument("--folder", type=Path, default=Path("runs/mixed"), help="where the mixed folder is made")
    ap.add_argument("--target-of", default="ph2:dermoscopy-lesion,isic2017:dermoscopy-lesion,"
                    "drive:fundus-vessels,chasedb1:fundus-vessels", help="dataset:task pairs (others: the dataset)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    target_of = dict(p.split(":") for p in args.target_of.split(",") if p)

    test = sorted((e for e in read_manifest(args.split) if e.split == "test"), key=lambda e: (e.dataset, e.case_id))
    first = {}
    for e in test:
        first.setdefault(e.dataset, e)
    if args.folder.exists():
        shutil.rmtree(args.folder)
    args.folder.mkdir(parents=True)
    for ds, e in first.items():
        shutil.copy(e.image, args.folder / f"{ds}_{Path(e.image).name}")
    pred = args.folder.with_name(args.folder.name + "-pred")
    if pred.exists():
        shutil.rmtree(pred)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "medseg", "predict", str(args.model), str(args.folder), "-o", str(pred)],
                   check=True)
    print(f"medseg predict: {len(first)} images in {time.perf_counter() - t0:.1f} s")

    with open(pred / "tasks.csv", newline="") as f:
        chosen = {Path(r["image"]).name: r["task"] for r in csv.DictReader(f)}
    rows, tiles, captions = [], [], []
    for ds, e in first.items():
        name = f"{ds}_{Path(e.image).name}"
        stem = Path(name).stem
        mask = np.asarray(Image.open(pred / f"{stem}.png")) > 0
        gt = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0]
        task = chosen[name]
        right = task == target_of.get(ds, ds)
        rows.append({"modality": e.modality, "dataset": ds, "task_chosen": task, "right_task": right,
                     "dice": float(dice(mask, gt.binary_mask()))})
        tiles.append(np.asarray(Image.open(pred / f"{stem}_overlay.png").convert("RGB")))
        captions.append(f"{ds} -> {task}{'' if right else ' (wrong)'}")
    args.out.mkdir(parents=True, exist_ok=True)
    save_overlay_grid(tiles, captions, args.out / "predict_mixed_folder.png", columns=5)
    write_csv(rows, args.out / "predict_mixed_folder_tasks.csv")
    wrong = [r["dataset"] for r in rows if not r["right_task"]]
    print(f"{len(rows) - len(wrong)}/{len(rows)} right tasks" + (f"; wrong: {', '.join(wrong)}" if wrong else ""))
    print(f"mean Dice {np.mean([r['dice'] for r in rows]):.3f}")


if __name__ == "__main__":
    main()
