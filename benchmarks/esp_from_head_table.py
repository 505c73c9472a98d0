"""ESP-MedSAM with and without the universal head's decoder, beside the universal model, on the same test images.

``medseg experiment esp-medsam configs/esp-from-head-cpu.yaml`` trains ESP-MedSAM twice on the universal split capped
after splitting (its 119 test images are a subset of universal's 340): the full model (LiteMedSAM's decoder and a
fresh SPPG / queries) and the ``from_head`` variant (the student's decoder grafted from the shipped head). This script
reads that run's per-image scores and the universal run's committed ones, keeps the images all of them scored, and
prints the mean Dice per modality and over modalities (the issue's form) of each: ESP-MedSAM (its own task choice),
ESP-MedSAM from the head, the universal model (no task given), its head with the true task, LiteMedSAM with
ground-truth boxes and with the image-region box. ``--step0`` adds where the two ESP-MedSAM trainings start: the
validation Dice (true task, mean over modalities) of the MMDKD student with its own decoder and with the head's
grafted in (``head_init``) — does the head's decoder work on the student's embeddings before any training?

    python benchmarks/esp_from_head_table.py [--run runs/esp-from-head-cpu]
                                             [--universal benchmarks/results/universal-cpu/scores]
                                             [--step0] [--out benchmarks/results/esp-from-head-cpu]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from _common import emit
from medseg.experiments.esp import dice_by_modality


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/esp-from-head-cpu"))
    ap.add_argument("--universal", type=Path, default=Path("benchmarks/results/universal-cpu/scores"))
    ap.add_argument("--step0", action="store_true", help="also score the two trainings' starts on validation")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    sources = {
        "esp": args.run / "scores" / "esp.csv",
        "esp_from_head": args.run / "ablation-from_head" / "scores" / "esp.csv",
        "universal": args.universal / "universal.csv",
        "universal_head_true_task": args.universal / "test_head.csv",
        "lite_medsam_gt_box": args.run / "scores" / "lite_medsam_gt_box.csv",
        "lite_medsam_whole_box": args.run / "scores" / "lite_medsam_whole_box.csv",
    }
    scores = {name: _read(path) for name, path in sources.items()}
    key = ("modality", "dataset", "case")
    common = set.intersection(*({tuple(r[k] for k in key) for r in rows} for rows in scores.values()))
    n_esp = len(scores["esp"])
    if len(common) != n_esp:
        raise SystemExit(f"only {len(common)} of the {n_esp} ESP-MedSAM test images are in every score file: "
                         "is the universal run's test split the one this ESP run capped?")
    scores = {name: [r for r in rows if tuple(r[k] for k in key) in common] for name, rows in scores.items()}
    rows = dice_by_modality(scores)
    emit(f"ESP-MedSAM from the universal head, {len(common)} test images, mean Dice", rows, args.out)
    if args.step0:
        emit("Where the ESP-MedSAM trainings start, validation Dice with the true task", step0(args.run), args.out)


def step0(run: Path) -> list[dict[str, object]]:
    """Validation Dice (true task; per modality and mean over modalities) of ``mmdkd/model`` (LiteMedSAM's decoder,
    fresh SPPG and queries) and of ``ablation-from_head/head_init/model`` (the head's decoder), untrained."""
    from medseg.data import read_manifest, target_name
    from medseg.evaluation import score_entries
    from medseg.experiments.esp import load_esp_config
    from medseg.inference import Predictor
    from medseg.models.io import load_model

    cfg = load_esp_config(run / "config.yaml")
    val = [e for e in read_manifest(run / "split.csv") if e.split == "val"]
    scores = {}
    for name, folder in (("mmdkd_own_decoder", run / "mmdkd" / "model"),
                         ("mmdkd_head_decoder", run / "ablation-from_head" / "head_init" / "model")):
        loaded = load_model(folder)
        by_task = {t: Predictor.for_model(loaded, task=t) for t in loaded.model.tasks}
        scores[name] = score_entries(val, lambda e, b=by_task: b[target_name(e.dataset, cfg.data.target_of)])
    return dice_by_modality(scores)


if __name__ == "__main__":
    main()
