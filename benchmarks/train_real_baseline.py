"""A supervised U-Net baseline on the shared real data, trained for a fixed number of steps on the CPU, scored on
the held-out split at native resolution (Dice, NSD τ = 2 px) next to prompt-free LiteMedSAM on the same images.

    python benchmarks/train_real_baseline.py --steps 660 --out benchmarks/results

A fixed step count (not a wall-time budget) makes the result the same on a busy and a quiet machine; the wall time
is reported beside it (660 steps ≈ 12 minutes on 2 quiet cores). ``--minutes`` adds a wall-time cap.

The split is the one ``medseg data split --test 0.2 --val 0.1 --seed 0`` writes (per-dataset seeded, group-aware:
no CHASE_DB1 child or ISBI 2012 slice block on two sides): the U-Net trains on ``train``, its weights are chosen on
``val`` (best validation Dice at native resolution), and every model is scored on ``test`` only.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import reference_split, versions_line
from medseg.data import load_samples, write_manifest
from medseg.evaluation import format_markdown_table, write_csv
from medseg.inference import Predictor
from medseg.metrics import MetricConfig, SegmentationMetric
from medseg.models import build_model
from medseg.models.io import load_model
from medseg.training import load_config, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--steps", type=int, default=660, help="optimiser steps (batch 8)")
    ap.add_argument("--minutes", type=int, default=None, help="optional wall-time cap")
    ap.add_argument("--run", type=Path, default=Path("runs/real_baseline"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    split = reference_split(args.data)
    manifest = write_manifest(split, args.run / "manifest.csv")
    cfg = load_config(None, [
        f"out_dir={args.run}", f"data.manifest={manifest}", "data.img_size=256",
        "model.name=resnet_unet",
        "model.options={arch: resnet18, base_width: 32, decoder_channels: [128, 64, 32, 16, 16]}",
        "loss.weights={dice: 1.0, bce: 1.0}", "optim.lr=0.001", "optim.scheduler=none",
        "trainer.max_epochs=-1", f"trainer.max_steps={args.steps}", "trainer.batch_size=8",
        *([f"trainer.max_time=00:00:{args.minutes:02d}:00"] if args.minutes else []),
        "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.checkpoint_every_n_steps=200",
        "trainer.gradient_clip_val=1.0", "trainer.final_weights=best",
    ])
    t0 = time.perf_counter()
    result = train(cfg)
    minutes = (time.perf_counter() - t0) / 60
    unet = Predictor(load_model(result.model_dir).model, img_size=256)
    sam = Predictor(build_model("lite_medsam", pretrained=True), img_size=256)
    test = [e for e in split if e.split == "test"]
    metrics = {name: SegmentationMetric(MetricConfig()) for name in ("unet", "lite_medsam_prompt_free")}
    for e in test:
        for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero"):
            gt = s.binary_mask()
            for name, pred in (("unet", unet), ("lite_medsam_prompt_free", sam)):
                metrics[name](pred.predict([s.image])[0].mask, gt, case=s.case_id, modality=s.modality,
                              dataset=s.dataset)
    rows = []
    for name, m in metrics.items():
        write_csv(m.rows, args.out / f"real_baseline_{name}_per_image.csv")
        rows += [{"model": name, **{k: r[k] for k in ("modality", "dataset", "n", "dice_mean", "nsd_mean",
                                                      "hd95_median")}} for r in m.summary(by=("modality", "dataset"))]
    table = format_markdown_table(rows, digits=3)
    write_csv(rows, args.out / "real_baseline_summary.csv")
    (args.out / "real_baseline_summary.md").write_text(
        f"resnet_unet (ResNet-18, width 32) trained {result.global_step} steps ({minutes:.1f} min) on the CPU "
        f"(weights chosen on the 10 % validation split); scored on the held-out 20 % test split ({len(test)} "
        f"images){versions_line()}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
