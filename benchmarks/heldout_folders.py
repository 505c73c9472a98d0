"""Held-out pairs measured as a user meets an unseen dataset: a folder of its test images given to
``medseg evaluate --model``, with each routing.

``medseg experiment universal configs/universal-heldout-cpu.yaml`` trains a ``universal`` model that never saw the
config's ``held_out`` datasets (PH2, CHASE_DB1) and scores it per image on the whole test split (its
``report/held_out.csv``). This script measures what a person with a folder of one such dataset gets, through the
command line in a subprocess, exactly as they would run it:

1. each held-out dataset's test images and masks (the run's ``split.csv``) are copied to
   ``WORK/<dataset>/{images,masks}`` (nothing else in the folder);
2. ``medseg evaluate WORK/<dataset>/images WORK/<dataset>/masks --model OUT_DIR/model --routing R
   -o WORK/<dataset>-R`` runs for each ``--routings`` value (``auto``, the default: the folder shares a task prior
   when one task holds half of it; ``image``: each image's own most probable task; ``batch``: the folder always
   shares its task prior, EM label-shift adaptation);
3. the per-image Dice (``metrics.csv``) and the task each image was segmented as (``predictions/tasks.csv``) are read
   back and set beside the in-domain run's ``universal`` Dice of the same images (the config's ``in_domain``).

The table has one row per dataset and routing: images, routed to the dataset's own task, held-out Dice, in-domain
Dice, ``gap`` (in-domain − held-out) and whether it is within 0.10 (the issue's target). A row
``experiment (per image)`` repeats the run's own scores of the same images as a cross-check of the ``image`` row.

    python benchmarks/heldout_folders.py configs/universal-heldout-cpu.yaml \\
        --out benchmarks/results/universal-heldout-cpu/folders        # ~5 min on 2 cores, after the experiment
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.experiments.universal_report import read_scores, read_table

REPO = Path(__file__).resolve().parents[1]
LIMIT = 0.10


def stage(entries: list, folder: Path) -> None:
    """Copy ``entries``' images and masks to ``folder/images`` and ``folder/masks`` (a fresh folder)."""
    if folder.exists():
        shutil.rmtree(folder)
    for sub, attr in (("images", "image"), ("masks", "mask")):
        (folder / sub).mkdir(parents=True)
        for e in entries:
            src = Path(getattr(e, attr))
            shutil.copy2(src, folder / sub / src.name)


def evaluate(images: Path, masks: Path, model: Path, routing: str, out: Path) -> None:
    """``medseg evaluate IMAGES MASKS --model MODEL --routing ROUTING -o OUT`` in a subprocess (a fresh ``out``)."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "medseg", "evaluate", str(images), str(masks), "--model", str(model),
           "--routing", routing, "-o", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path, help="the held-out recipe (its out_dir holds the trained model)")
    ap.add_argument("--routings", nargs="+", default=["auto", "image", "batch"], choices=("auto", "image", "batch"))
    ap.add_argument("--work", type=Path, default=REPO / "runs/heldout-folders",
                    help="where the folders and the evaluations go (rebuilt)")
    ap.add_argument("--out", type=Path, default=None, help="write the table (CSV + Markdown) here")
    args = ap.parse_args()

    exp = UniversalExperiment(load_universal_config(args.config))
    model = exp.out / "model"
    if not (model / "model.json").is_file():
        raise SystemExit(f"{model}: no trained model; run `medseg experiment universal {args.config}` first")
    if not exp.cfg.held_out or exp.cfg.in_domain is None:
        raise SystemExit(f"{args.config}: needs held_out datasets and an in_domain run to compare with")
    in_domain = {r["case"]: float(r["dice"]) for r in read_scores(exp.cfg.in_domain)["universal"]}
    own_path = exp.out / "scores" / "universal.csv"
    own = {r["case"]: r for r in read_table(own_path)} if own_path.is_file() else {}
    test = [e for e in exp.entries() if e.split == "test"]
    rows: list[dict[str, Any]] = []
    for ds in exp.cfg.held_out:
        entries = [e for e in test if e.dataset == ds]
        if not entries:
            raise SystemExit(f"{args.config}: no test images of held-out dataset {ds!r}")
        target, cases = exp.task_of(ds), [e.case_id for e in entries]
        folder = args.work / ds
        stage(entries, folder)
        reference = float(np.mean([in_domain[c] for c in cases]))

        def row(routing: str, dice: dict[str, float], tasks: dict[str, str], ds: str = ds, target: str = target,
                cases: list[str] = cases, reference: float = reference) -> dict[str, Any]:
            if sorted(dice) != sorted(cases):
                raise SystemExit(f"{ds} ({routing}): scored {sorted(dice)}, expected {sorted(cases)}")
            held = float(np.mean([dice[c] for c in cases]))
            return {"dataset": ds, "target": target, "routing": routing, "n": len(cases),
                    "routed_to_its_task": f"{sum(tasks[c] == target for c in cases)} / {len(cases)}",
                    "dice_held_out": held, "dice_in_domain": reference, "gap": reference - held,
                    f"within_{LIMIT:g}": bool(reference - held <= LIMIT)}

        for routing in args.routings:
            out = args.work / f"{ds}-{routing}"
            evaluate(folder / "images", folder / "masks", model, routing, out)
            dice = {str(r["case"]): float(r["dice"]) for r in read_table(out / "metrics.csv")}
            tasks = {Path(str(r["image"])).stem: str(r["task"]) for r in read_table(out / "predictions/tasks.csv")}
            rows.append(row(f"medseg evaluate --routing {routing}", dice, tasks))
        if own:
            rows.append(row("experiment (per image)", {c: float(own[c]["dice"]) for c in cases},
                            {c: str(own[c]["task"]) for c in cases}))
    emit("Held-out datasets as folders", rows, args.out)


if __name__ == "__main__":
    main()
