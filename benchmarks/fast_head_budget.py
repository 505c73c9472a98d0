"""Does the ``--fast`` head gain from the main head's training budget?

The shipped ``universal`` model's ``--fast`` mode runs LiteMedSAM's encoder at 128² input and a head fine-tuned for
it: 700 steps of batch 4 from the refitted head (``fast:`` in ``configs/universal-cpu.yaml``), half the main head's
1,400, and its validation Dice at the canvas was still moving (0.657, 0.668, 0.681, 0.670 at its four checks).
``--fast`` (that head for every task) scores 0.644 on the test split, 0.054 below ``universal``: 0.004 outside the
issue's 0.05. This script fine-tunes the fast head again with ``--steps`` (default 1,400, checked ``--validations``
times, the best check kept), everything else as the recipe's fast stage (``UniversalExperiment.stage_fast``: the same
views, learning rates, loss and classifier refit), and compares the candidate with the shipped fast head on the
*validation* split, at native resolution, through the whole ``--fast`` path (routing by the fast classifier
included): ``--fast`` and ``--fast --keep-specialists``.

Adoption rule, fixed before the run: the candidate replaces the shipped fast head only if its ``--fast`` validation
Dice, mean over modalities (the issue's form), is higher, its ``--fast --keep-specialists`` validation Dice is at most
0.01 lower and its ``--fast`` validation task accuracy is not lower. The test split is scored afterwards
(``benchmarks/rescore_universal.py``), never used to decide.

The experiment run that made the shipped model is not kept; the shipped model's ``head`` part (the refitted head,
stored as float16) stands in for that run's ``classifier/model``, the start of the fast stage. LiteMedSAM's 128²
embeddings of the four training views and of the validation images are cached under ``cache_dir``
(content-addressed: about 20 min on 2 cores, once).

    python benchmarks/fast_head_budget.py                    # ~50 min on 2 cores, resumable; prints the table
    python benchmarks/fast_head_budget.py --steps 4 --validations 1 --run runs/fast-budget-smoke \\
        'split.keep={train: 1, val: 1}' --out runs/fast-budget-smoke/results    # a quick look at the plumbing
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from _common import emit
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.experiments.universal_report import modality_table, task_accuracy
from medseg.models.universal import replace_parts

REPO = Path(__file__).resolve().parents[1]
KINDS = ("fast", "fast_specialists")


def seed_run(run: Path, shipped: Path) -> None:
    """The shipped model's refitted head as the run's ``head/model`` and ``classifier/model`` (what the fast stage
    fine-tunes from), unless the run already has them."""
    for stage in ("head", "classifier"):
        dest = run / stage / "model"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(shipped / "head", dest)


def summarise(name: str, scores: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """One row: mean over modalities of each kind, and the ``--fast`` task accuracy."""
    modalities = modality_table(scores)
    mean = next(r for r in modalities if r["modality"] == "mean over modalities")
    row: dict[str, Any] = {"fast head": name}
    for kind in KINDS:
        row[f"val_{kind}"] = mean[f"dice_{kind}"]
    row["val_task_accuracy"] = task_accuracy(scores["fast"])[-1]["accuracy"]
    for r in modalities[:-1]:
        row[f"fast_{r['modality']}"] = r["dice_fast"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml")
    ap.add_argument("--model", type=Path, default=REPO / "src/medseg/assets/universal",
                    help="the universal model whose fast head is compared (and whose head the fine-tuning starts "
                         "from)")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--validations", type=int, default=7)
    ap.add_argument("--run", type=Path, default=REPO / "runs/universal-fast-budget")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs/universal-cpu/cache",
                    help="the image and embedding caches (shared with the in-domain run)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/universal-cpu/fast-budget")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_intermixed_args()

    exp = UniversalExperiment(load_universal_config(args.config, [
        *args.overrides, f"out_dir={args.run}", f"cache_dir={args.cache_dir}", f"fast.steps={args.steps}",
        f"fast.validations={args.validations}"]))
    exp.begin()
    seed_run(args.run, args.model)
    fast_head = exp.stage_fast()
    candidate = args.run / "model"
    if not (candidate / "model.json").is_file():
        replace_parts(args.model, candidate, {"fast_head": fast_head})
    val = [e for e in exp.trained_entries() if e.split == "val"]
    rows = []
    for name, model in (("shipped (700 steps)", args.model), (f"candidate ({args.steps} steps)", candidate)):
        slug = "shipped" if model == args.model else "candidate"
        rows.append(summarise(name, exp.score_model(model, val, args.run / "val" / slug, only=KINDS)))
    base, cand = rows
    cand["adopt"] = (cand["val_fast"] > base["val_fast"]
                     and cand["val_fast_specialists"] >= base["val_fast_specialists"] - 0.01
                     and cand["val_task_accuracy"] >= base["val_task_accuracy"])
    base["adopt"] = False
    emit("Fast head training budget, validation", rows, args.out)
    metrics = sorted((args.run / "fast" / "head").glob("logs/version_*/metrics.csv"))
    if metrics:
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(metrics[-1], args.out / "head_metrics.csv")
    for name in ("history.csv", "summary.json"):
        src = args.run / "fast" / "classifier" / name
        if src.is_file():
            shutil.copy2(src, args.out / f"classifier_{name}")
    print(f"candidate model: {candidate} ({'adopted' if cand['adopt'] else 'not adopted'} by the rule)")


if __name__ == "__main__":
    main()
