"""The embedded default workflow behind ``medseg demo``.

Generates a small synthetic multi-modality data set, splits it (train / validation / test, stratified), trains a
small ResNet-18/scSE U-Net for a fixed number of steps (about a minute on 2 CPU cores; the same Lightning engine as
``medseg train``), keeps the best-on-validation weights, predicts the test images, evaluates them with every
metric next to the prompt-free Otsu baseline, and writes a report (Markdown + CSV + overlays + training curve).
The step count, not the wall time, fixes the work, so every machine shows the same result.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L

from medseg.data import discover, generate_dataset, load_samples, scan, stratified_split, write_manifest
from medseg.evaluation import format_markdown_table, save_overlay_grid, write_csv
from medseg.metrics import MetricConfig, SegmentationMetric
from medseg.ops import Cleanup, otsu_pseudo_mask, overlay_contours
from medseg.utils.atomic import atomic_path, atomic_write_text

DEMO_MODEL = {"name": "resnet_unet",
              "options": {"arch": "resnet18", "base_width": 16, "decoder_channels": [64, 32, 32, 16, 16]}}


@dataclass(frozen=True)
class DemoResult:
    report: Path
    summary: list[dict]


def _loss_curve(log_root: Path, dest: Path) -> Path | None:
    files = sorted(log_root.glob("version_*/metrics.csv"))
    if not files:
        return None
    steps, loss, vsteps, vdice = [], [], [], []
    with open(files[-1], newline="") as fh:
        for r in csv.DictReader(fh):
            if r.get("train/loss"):
                steps.append(int(r["step"]))
                loss.append(float(r["train/loss"]))
            if r.get("val/dice"):
                vsteps.append(int(r["step"]))
                vdice.append(float(r["val/dice"]))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    lines = ax.plot(steps, loss, label="train loss (Dice + BCE)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if vdice:
        ax2 = ax.twinx()
        lines += ax2.plot(vsteps, vdice, "o-", color="tab:green", markersize=3,
                          label="validation Dice (native resolution)")
        ax2.set_ylabel("validation Dice")
        ax2.set_ylim(0, 1)
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right", fontsize=8)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return dest


class _StepProgress(L.Callback):
    """Reports ``(step, total)`` after every optimiser step (for a console progress bar)."""

    def __init__(self, report: Callable[[int, int], None], total: int) -> None:
        self.report, self.total = report, total

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.report(int(trainer.global_step), self.total)


def run_demo(out: str | Path, *, per_modality: int = 12, size: int = 128, seed: int = 0, steps: int = 300,
             log: Callable[[str], None] = print, progress: Callable[[int, int], None] | None = None) -> DemoResult:
    """Run the demo into folder ``out``; returns the report path and the per-modality summary rows.

    Args:
        steps: optimiser steps (300 ≈ one minute on 2 CPU cores).
        progress: called as ``progress(step, steps)`` after every training step.
    """
    from medseg.inference import Predictor
    from medseg.models.io import load_model
    from medseg.training import load_config, train

    out = Path(out)
    data_root = generate_dataset(out / "data", per_modality=per_modality, size=size, seed=seed)
    log(f"synthetic data: {data_root}")
    report = scan(data_root)
    atomic_write_text(out / "scan.md", report.to_markdown())
    entries, _ = discover(data_root)
    split = stratified_split(entries, test=0.25, val=0.15, seed=seed)
    manifest = write_manifest(split, out / "manifest.csv")

    cfg = load_config(None, [
        f"out_dir={out / 'run'}", f"seed={seed}", f"data.manifest={manifest}", f"data.img_size={size}",
        f"model.name={DEMO_MODEL['name']}", f"model.options={DEMO_MODEL['options']}",
        f"trainer.max_steps={steps}", "trainer.max_epochs=-1", "trainer.progress_bar=false",
        "trainer.batch_size=8", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.log_every_n_steps=5",
        "trainer.checkpoint_every_n_steps=100", "trainer.check_val_every_n_epoch=5",
        "trainer.gradient_clip_val=1.0", "optim.lr=0.002",
        "optim.scheduler=none", "trainer.final_weights=best",
    ])
    log(f"training {DEMO_MODEL['name']} for {steps} steps on the CPU → {cfg.out_dir}")
    callbacks = [_StepProgress(progress, steps)] if progress is not None else None
    result = train(cfg, extra_callbacks=callbacks)
    loaded = load_model(result.model_dir)
    predictor = Predictor.for_model(loaded, batch_size=16)
    held_out = [e for e in split if e.split == "test"]
    model_metric, otsu_metric = SegmentationMetric(MetricConfig()), SegmentationMetric(MetricConfig())
    cleanup = Cleanup(min_size=10, fill_holes=True)
    tiles, captions, shown = [], [], set()
    for e in held_out:
        for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset):
            gt = s.binary_mask()
            pred = predictor.predict([s.image])[0].mask
            otsu = otsu_pseudo_mask(s.image, "auto", cleanup=cleanup)
            row = model_metric(pred, gt, case=s.case_id, modality=s.modality, dataset=s.dataset)
            orow = otsu_metric(otsu, gt, case=s.case_id, modality=s.modality, dataset=s.dataset)
            if s.modality not in shown:
                shown.add(s.modality)
                tiles += [overlay_contours(s.image, gt, pred), overlay_contours(s.image, gt, otsu)]
                captions += [f"{s.modality}: U-Net {row['dice']:.2f}", f"{s.modality}: Otsu {orow['dice']:.2f}"]
    write_csv(model_metric.rows, out / "metrics.csv")
    write_csv(otsu_metric.rows, out / "metrics_otsu.csv")
    cols = ["modality", "n", "dice_mean", "nsd_mean", "hd95_median"]
    m_sum, o_sum = model_metric.summary(by=("modality",)), otsu_metric.summary(by=("modality",))
    table = [{"modality": a["modality"], "n": a["n"], "dice_unet": a["dice_mean"], "dice_otsu": b["dice_mean"],
              "nsd_unet": a["nsd_mean"], "nsd_otsu": b["nsd_mean"], "hd95_unet": a["hd95_median"]}
             for a, b in zip(m_sum, o_sum, strict=True)]
    save_overlay_grid(tiles, captions, out / "overlays.png", columns=4)
    curve = _loss_curve(out / "run" / "logs", out / "training_curve.png")
    text = "\n".join([
        "# medseg demo report", "",
        f"Synthetic data: {per_modality} images × {len(shown)} modalities at {size}², seed {seed} (`data/`); "
        f"stratified split (`manifest.csv`): {sum(e.split == 'train' for e in split)} train, "
        f"{sum(e.split == 'val' for e in split)} validation, {len(held_out)} test.",
        f"Model: `{DEMO_MODEL['name']}` {DEMO_MODEL['options']}, trained {result.global_step} steps on the CPU "
        f"with Dice + BCE; "
        + (f"the weights with the best validation Dice (step {loaded.meta['best_step']}) are "
           if "best_step" in loaded.meta else "the last weights (no validation Dice was logged) are ")
        + "scored on the test images; model folder `run/model/`.",
        "Baseline: prompt-free Otsu pseudo-mask (BT.601 grey, polarity `auto`, holes filled, objects < 10 px removed).",
        "Metrics on the test images: Dice, NSD at τ = 2 px, HD95 in px (per-image rows in `metrics.csv`, "
        "`metrics_otsu.csv`).", "",
        format_markdown_table(table, digits=3), "",
        "Green: ground truth; magenta: prediction.", "",
        "![overlays](overlays.png)", "",
        *(["![training curve](training_curve.png)", ""] if curve else []),
        f"Data scan: [scan.md](scan.md) — {len(report.errors)} errors.", "",
    ])
    atomic_write_text(out / "report.md", text)
    log(f"report: {out / 'report.md'}")
    return DemoResult(out / "report.md", [{c: r.get(c) for c in cols} for r in m_sum])
