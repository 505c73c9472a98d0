"""Does moving an unseen camera's colours to the training images' (Reinhard colour transfer at test time) make the
vessel specialist hold up on it?

The held-out pair's remaining gap is the vessel specialist's: with every CHASE_DB1 test image routed to its true task
(``batch_routing.py``), the DRIVE-only specialist of held-out run 2 scored 0.655 against the in-domain 0.818. The
specialist normalises each image by its min-max only, so another camera's colour balance (CHASE_DB1: Nidek, darker,
redder, uneven light; DRIVE: Canon) reaches it unchanged. :func:`medseg.ops.colour_transfer.transfer_colour` moves
each image's foreground CIELAB statistics to the mean statistics of the specialist's training images, at test time,
without retraining.

Scored at native resolution with the true task, on the target's validation and test images:

- ``held-out``: the DRIVE-only specialist trained by ``heldout_specialist_aug.py`` (reference recipe, the held-out
  run's settings; ``--held-out-run``), as it is and with colour transfer to DRIVE's training statistics;
- ``in-domain``: the shipped specialist (DRIVE + CHASE_DB1), as it is and with colour transfer to the statistics of
  both datasets' training images.

A second variant, written after the first run (whose in-domain part failed, all of it on CHASE_DB1, because one
average of two cameras' statistics moves every image away from its own camera's): ``colour transfer, nearest
dataset`` moves each image to the statistics of the training dataset nearest to its own
(:func:`medseg.ops.colour_transfer.transfer_to_nearest`). With one training dataset (held out) it is the first
variant; in domain an image of a known camera stays close to itself. The rule below is unchanged.

Rule, fixed before the run: colour transfer becomes an option of the shipped specialist only if (1) held out, the
CHASE_DB1 validation Dice rises and DRIVE's validation Dice falls by at most 0.01, and (2) in domain, the validation
Dice (mean over the two datasets) falls by at most 0.01. Test images are reported, never used to decide.

    python benchmarks/specialist_colour_transfer.py        # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit
from medseg.data import load_samples
from medseg.evaluation import score_entries
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.inference import Predictor
from medseg.metrics.segmentation import group_means
from medseg.models.io import load_model
from medseg.ops.colour_transfer import ColourStats, reference_stats, transfer_colour, transfer_to_nearest
from medseg.weights import shipped_model_folder

REPO = Path(__file__).resolve().parents[1]


class ColourTransferred:
    """A predictor whose inputs are first moved to ``stats`` (:func:`transfer_colour`), or with several named
    references to the nearest of them (:func:`transfer_to_nearest`)."""

    def __init__(self, predictor: Predictor, stats: ColourStats | dict[str, ColourStats]) -> None:
        self.predictor, self.stats = predictor, stats

    def predict(self, images: Sequence[np.ndarray], *args: Any) -> Sequence[Any]:
        move = ((lambda im: transfer_to_nearest(im, self.stats)) if isinstance(self.stats, dict)
                else (lambda im: transfer_colour(im, self.stats)))
        return self.predictor.predict([move(img) for img in images], *args)


def rows_for(exp: UniversalExperiment, folder: Path, target: str, stage: str, out: Path) -> list[dict[str, Any]]:
    """Per-image rows of the specialist in ``folder`` on the target's validation and test images, as it is and
    with colour transfer to its training images' statistics."""
    held = set(exp.cfg.held_out)
    entries = exp.entries()
    train = [e for e in entries if e.split == "train" and exp.task_of(e.dataset) == target and e.dataset not in held]
    images = {e.dataset: [] for e in train}
    for e in train:
        images[e.dataset] += [s.image for s in load_samples(e.image, None)]
    stats = reference_stats(im for ims in images.values() for im in ims)
    per_dataset = {d: reference_stats(ims) for d, ims in sorted(images.items())}
    (out / stage).mkdir(parents=True, exist_ok=True)
    (out / stage / "reference_stats.json").write_text(json.dumps(
        {"datasets": sorted(images), "images": len(train), **stats.to_dict(),
         "per_dataset": {d: st.to_dict() for d, st in per_dataset.items()}}))
    scored = [e for e in entries if exp.task_of(e.dataset) == target and e.split in ("val", "test")]
    base = Predictor.for_model(load_model(folder))
    rows = []
    for variant, predictor in (("as it is", base), ("colour transfer", ColourTransferred(base, stats)),
                               ("colour transfer, nearest dataset", ColourTransferred(base, per_dataset))):
        slug = {"as it is": "plain", "colour transfer": "colour"}.get(variant, "nearest")
        for r in score_entries(scored, lambda e, p=predictor: p, csv_path=out / stage / f"{slug}.csv",
                               columns=lambda e: {"split": e.split, "held_out": str(e.dataset in held)}):
            rows.append({**r, "stage": stage, "variant": variant})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", type=Path, default=REPO / "configs/universal-heldout-cpu.yaml")
    ap.add_argument("--held-out-run", type=Path, default=REPO / "runs/universal-heldout-cpu-specialist-aug/reference",
                    help="the held-out specialist's run (its split and specialists/<target>/model)")
    ap.add_argument("--in-domain", type=Path, default=REPO / "configs/universal-cpu.yaml")
    ap.add_argument("--target", default="retinal-vessel")
    ap.add_argument("--run", type=Path, default=REPO / "runs/specialist-colour")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/universal-cpu/specialist-colour")
    args = ap.parse_args()

    held = UniversalExperiment(load_universal_config(args.held_out, [f"out_dir={args.held_out_run}"]))
    held.begin()
    held.stage_split()
    inside = UniversalExperiment(load_universal_config(args.in_domain, [f"out_dir={args.run}/in-domain-run"]))
    inside.begin()
    inside.stage_split()
    rows = (rows_for(held, args.held_out_run / "specialists" / args.target / "model", args.target, "held-out",
                     args.run)
            + rows_for(inside, shipped_model_folder("universal") / "specialists" / args.target, args.target,
                       "in-domain", args.run))
    by = ("stage", "variant", "split", "dataset")
    n = group_means(rows, by, agg=len)
    table = [{"stage": s, "variant": v, "split": sp, "dataset": d, "n": int(n[s, v, sp, d]), "dice_true_task": x}
             for (s, v, sp, d), x in group_means(rows, by).items()]
    dice = {(t["stage"], t["variant"], t["split"], t["dataset"]): t["dice_true_task"] for t in table}
    scored_sets = {t["dataset"] for t in table if t["stage"] == "held-out"}
    held_sets = sorted(scored_sets & set(held.cfg.held_out))
    trained = sorted(scored_sets - set(held_sets))

    def mean(stage: str, variant: str, split: str, sets: list[str]) -> float:
        return float(np.mean([dice[stage, variant, split, d] for d in sets]))

    all_sets = sorted({t["dataset"] for t in table if t["stage"] == "in-domain"})
    summary = []
    for variant in ("as it is", "colour transfer", "colour transfer, nearest dataset"):
        summary.append({"variant": variant,
                        "held_out_val_trained": mean("held-out", variant, "val", trained),
                        "held_out_val_unseen": mean("held-out", variant, "val", held_sets),
                        "held_out_test_trained": mean("held-out", variant, "test", trained),
                        "held_out_test_unseen": mean("held-out", variant, "test", held_sets),
                        "in_domain_val": mean("in-domain", variant, "val", all_sets),
                        "in_domain_test": mean("in-domain", variant, "test", all_sets)})
    base = summary[0]
    for cand in summary:
        cand["adopt"] = (cand is not base and cand["held_out_val_unseen"] > base["held_out_val_unseen"]
                         and cand["held_out_val_trained"] >= base["held_out_val_trained"] - 0.01
                         and cand["in_domain_val"] >= base["in_domain_val"] - 0.01)
    print(f"{args.target} specialists, true task, native resolution; unseen: {', '.join(held_sets)}")
    emit("Specialist colour transfer", table, args.out)
    emit("Specialist colour transfer summary", summary, args.out)


if __name__ == "__main__":
    main()
