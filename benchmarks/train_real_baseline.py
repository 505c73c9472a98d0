"""The supervised reference on every dataset of the shared data: one ResNet U-Net per dataset (the task-specific
baseline the method papers compare against) and one universal model over all datasets (one output per target),
trained on native-resolution patches within a stated CPU budget, scored on the held-out test split at native
resolution (sliding windows; Dice, NSD τ = 2 px, HD95), with per-image CSVs for paired comparisons.

    python benchmarks/train_real_baseline.py --per-dataset --universal --out benchmarks/results

Datasets are discovered from the folder tree (``<modality>/<dataset>/images|masks``). The split is the reference
split every benchmark shares (``medseg data split --test 0.2 --val 0.1 --seed 0``: per-dataset seeded, group-aware,
so 80 % train+val / 20 % test); weights are chosen on ``val`` (best validation Dice, sliding window at native
resolution) and every number is measured on ``test`` only.

Every stage is cached under ``--run``: a trained model is reused, an interrupted training resumes from its last
checkpoint (the budget counts the CPU time already spent), and scoring is redone only when missing.

Budgets are **minutes on 2 cores, measured as CPU time** of the training process (``trainer.max_cpu_minutes`` =
2 × minutes; user + system time of all threads), so a model gets the same work on a quiet and on a shared machine:
``--minutes`` for every dataset, ``--budget DATASET=MIN`` to override one, ``--universal-minutes``. The table
states each model's budget, steps, and the wall minutes it actually took.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

from _common import reference_split, versions_line
from medseg.data import CatalogEntry, write_manifest
from medseg.evaluation import format_markdown_table, score_entries, write_csv
from medseg.inference import Predictor
from medseg.metrics import summarize_rows
from medseg.models.io import LoadedModel, load_model
from medseg.training import load_config, train
from medseg.training.fit import last_checkpoint

# targets shared by several datasets (README of the data): they share one output of the universal model
SHARED_TARGETS = {"ph2": "skin-lesion", "isic2017": "skin-lesion"}

RECIPE = [
    "model.name=resnet_unet",
    "model.options={arch: resnet18, base_width: 32, decoder_channels: [128, 64, 32, 16, 16]}",
    "data.patch_size=256", "data.foreground_oversample=0.33", "data.val_overlap=0.25",
    "data.augment={flips: true, rot90: true, affine_p: 0.2, intensity_p: 0.15, gamma_p: 0.3}",
    "loss.weights={dice: 1.0, bce: 1.0}", "optim.lr=0.001", "optim.weight_decay=0.0001",
    "optim.scheduler=plateau", "optim.plateau_monitor=val/dice", "optim.plateau_factor=0.5",
    "optim.plateau_patience=4", "trainer.batch_size=8", "trainer.max_epochs=-1", "trainer.max_steps=-1",
    "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.checkpoint_every_n_steps=50",
    "trainer.gradient_clip_val=1.0", "trainer.final_weights=best", "trainer.log_every_n_steps=10",
]


def _train(name: str, entries: list[CatalogEntry], run: Path, minutes: float, steps_per_epoch: int,
           extra: list[str]) -> tuple[Path, dict]:
    """Train (or reuse / resume) one model; returns its folder and the training facts for the table."""
    facts_path = run / "facts.json"
    if (run / "model" / "model.json").is_file() and facts_path.is_file():
        return run / "model", json.loads(facts_path.read_text())
    manifest = write_manifest(entries, run / "manifest.csv")
    cfg = load_config(None, [*RECIPE, f"out_dir={run}", f"data.manifest={manifest}",
                             f"data.cache_dir={run.parent}/cache",
                             f"data.patches_per_epoch={steps_per_epoch * 8}",
                             f"trainer.max_cpu_minutes={2 * minutes}",  # minutes on 2 cores, as CPU time
                             *extra])
    t0 = time.perf_counter()
    result = train(cfg, resume=last_checkpoint(run) is not None)
    facts = {"model": name, "budget_min": minutes, "steps": result.global_step,
             "wall_min_last_run": round((time.perf_counter() - t0) / 60, 1),
             "best_val_dice": json.loads((result.model_dir / "model.json").read_text()).get("best_score")}
    facts_path.write_text(json.dumps(facts))
    return result.model_dir, facts


def _score(model_dir: Path, test: list[CatalogEntry], csv: Path, target_of: dict[str, str] | None) -> list[dict]:
    """Per-image metrics of a model on the test entries (cached in ``csv``; the model loads only when needed)."""
    predictors: dict[int, Predictor] = {}

    @functools.cache
    def loaded() -> LoadedModel:
        return load_model(model_dir)

    def predictor_for(e: CatalogEntry) -> Predictor:
        targets = loaded().meta.get("targets")
        channel = targets.index(target_of.get(e.dataset, e.dataset)) if targets and target_of is not None else 0
        if channel not in predictors:
            predictors[channel] = Predictor.for_model(loaded(), channel=channel)
        return predictors[channel]

    return score_entries(test, predictor_for, csv_path=csv)


def _summary(rows: list[dict], facts: dict) -> list[dict]:
    keep = ("modality", "dataset", "n", "dice_mean", "nsd_mean", "hd95_median")
    return [{"model": facts["model"], **{k: g[k] for k in keep}, "budget_min": facts["budget_min"],
             "steps": facts["steps"]} for g in summarize_rows(rows, by=("modality", "dataset"))
            if g["dataset"] != "all"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--run", type=Path, default=Path("runs/reference"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--per-dataset", action="store_true", help="one model per dataset")
    ap.add_argument("--universal", action="store_true", help="one model over all datasets")
    ap.add_argument("--datasets", nargs="*", default=None, help="only these datasets (default: all discovered)")
    ap.add_argument("--minutes", type=float, default=5.0, help="per-dataset budget: minutes on 2 cores (CPU time)")
    ap.add_argument("--budget", action="append", default=[], metavar="DATASET=MIN", help="override one budget")
    ap.add_argument("--universal-minutes", type=float, default=30.0)
    ap.add_argument("--universal-sampling", nargs="+", choices=["image", "dataset"], default=["dataset", "image"],
                    help="patch sampling of the universal model: dataset (balanced: each dataset equally often; "
                         "runs/reference/universal-balanced) and/or image (uniform over images; .../universal)")
    ap.add_argument("--steps-per-epoch", type=int, default=50, help="optimiser steps between validations")
    ap.add_argument("--summary-only", action="store_true", help="only rebuild the tables from cached results")
    args = ap.parse_args()
    budgets = {k: float(v) for k, v in (b.split("=", 1) for b in args.budget)}
    split = reference_split(args.data)
    datasets = sorted({(e.modality, e.dataset) for e in split})
    if args.datasets:
        datasets = [d for d in datasets if d[1] in args.datasets]
    test = [e for e in split if e.split == "test"]
    summary: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    if args.per_dataset:
        for mod, ds in datasets:
            run = args.run / f"{mod}-{ds}"
            mine = [e for e in split if e.dataset == ds and e.modality == mod]
            if args.summary_only and not (run / "facts.json").is_file():
                continue
            model_dir, facts = _train("per-dataset", [e for e in mine if e.split != "test"], run,
                                      budgets.get(ds, args.minutes), args.steps_per_epoch, [])
            rows = _score(model_dir, [e for e in mine if e.split == "test"],
                          args.out / "reference" / f"per_dataset_{mod}-{ds}.csv", None)
            summary += _summary(rows, facts)
            print(f"{mod}/{ds}: {facts}", flush=True)
    for sampling in args.universal_sampling if args.universal else []:
        tag = "universal" if sampling == "image" else "universal-balanced"
        run = args.run / tag
        if args.summary_only and not (run / "facts.json").is_file():
            continue
        names = {d: SHARED_TARGETS.get(d, d) for _, d in datasets}
        heads = ["data.heads=per_target", f"data.target_of={json.dumps(names)}", f"data.sampling={sampling}"]
        wanted = {d for _, d in datasets}
        model_dir, facts = _train(tag, [e for e in split if e.split != "test" and e.dataset in wanted],
                                  run, args.universal_minutes, args.steps_per_epoch, heads)
        rows = _score(model_dir, [e for e in test if e.dataset in wanted],
                      args.out / "reference" / f"{tag.replace('-', '_')}.csv", names)
        summary += _summary(rows, facts)
        print(f"{tag}: {facts}", flush=True)
    if not summary:
        return
    for model in dict.fromkeys(r["model"] for r in summary):  # the unweighted mean over datasets, per model
        mine = [r for r in summary if r["model"] == model]
        summary.append({"model": model, "modality": "all", "dataset": f"mean of {len(mine)}",
                        "n": sum(r["n"] for r in mine),
                        **{k: sum(r[k] for r in mine) / len(mine) for k in ("dice_mean", "nsd_mean")},
                        "hd95_median": float("nan"), "budget_min": sum(r["budget_min"] for r in mine)
                        if model == "per-dataset" else mine[0]["budget_min"], "steps": sum(r["steps"] for r in mine)
                        if model == "per-dataset" else mine[0]["steps"]})
    write_csv(summary, args.out / "reference_summary.csv")
    table = format_markdown_table(summary, digits=3)
    (args.out / "reference_summary.md").write_text(
        "ResNet-18 U-Net (width 32, scSE) on 256² native-resolution patches, CPU (2 threads), weights chosen on the "
        "validation split, scored on the held-out test split by sliding windows at native resolution; budget = "
        f"minutes on 2 cores, counted as CPU time{versions_line()}\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
