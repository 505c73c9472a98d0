"""Why held-out CHASE_DB1 is routed to the optic-disc task: the fundus images of the three fundus datasets side by side.

The held-out run (``configs/universal-heldout-cpu.yaml``) learns retinal vessels from DRIVE alone and the optic disc
from Drishti-GS1. DRIVE photographs are centred on the macula (45° field); Drishti-GS1 and CHASE_DB1 photographs are
centred on the optic disc. A classifier that saw one dataset per fundus target can separate them by framing, and an
unseen disc-centred vessel dataset then looks like the optic-disc task. This script draws every held-out test image
of ``--dataset`` captioned with the task the held-out model chose and its probability (from the run's committed
``scores/universal.csv``), beside training images of the datasets of the other fundus tasks (ground truth in
green).

    python benchmarks/heldout_routing_figure.py [--scores benchmarks/results/universal-heldout-cpu/scores]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from medseg.data import load_samples
from medseg.evaluation.overlay import save_overlay_grid
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.ops.boundary import overlay_contours

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", type=Path, default=REPO / "configs/universal-heldout-cpu.yaml")
    ap.add_argument("--scores", type=Path, default=REPO / "benchmarks/results/universal-heldout-cpu/scores",
                    help="the held-out run's scores folder (universal.csv: task and probability per test image)")
    ap.add_argument("--dataset", default="chasedb1", help="the held-out dataset to show")
    ap.add_argument("--per-dataset", type=int, default=2, help="training images shown of each other dataset")
    ap.add_argument("--out", type=Path,
                    default=REPO / "benchmarks/results/universal-heldout-cpu/heldout_routing_fundus.png")
    args = ap.parse_args()

    exp = UniversalExperiment(load_universal_config(args.held_out), progress=lambda m: None)
    entries = exp.entries()  # the split as the run made it (seeded; written to the run folder if missing)
    modality = next(e.modality for e in entries if e.dataset == args.dataset)
    routed = {r["case"]: r for r in csv.DictReader((args.scores / "universal.csv").open())
              if r["dataset"] == args.dataset}
    shown = [e for e in entries if e.dataset == args.dataset and e.case_id in routed]
    for other in sorted({e.dataset for e in entries if e.modality == modality} - {args.dataset}):
        shown += [e for e in entries if e.dataset == other and e.split == "train"][:args.per_dataset]
    tiles, captions = [], []
    for e in shown:
        s = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0]
        tiles.append(overlay_contours(s.image, s.binary_mask(), np.zeros_like(s.binary_mask())))
        r = routed.get(e.case_id) if e.dataset == args.dataset else None
        captions.append(f"{e.case_id}: {r['task']} {float(r['task_probability']):.2f}" if r
                        else f"{e.case_id} (train: {exp.task_of(e.dataset)})")
    print(save_overlay_grid(tiles, captions, args.out, columns=5, tile_size=160))


if __name__ == "__main__":
    main()
