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

    python benchmarks/fast_head_budget.py                    # ~45 min on 2 cores, resumable; prints the table

The committed table compared the fast head shipped before (700 steps; its model folder is in git at 203a99a):

    mkdir -p runs/universal-before && git archive 203a99a src/medseg/assets/universal | tar -x -C runs/universal-before
    python benchmarks/fast_head_budget.py --model runs/universal-before/src/medseg/assets/universal \\
        --model-label "shipped before (700 steps)"
    python benchmarks/fast_head_budget.py --steps 4 --validations 1 --run runs/fast-budget-smoke \\
        'split.keep={train: 1, val: 1}' --out runs/fast-budget-smoke/results    # a quick look at the plumbing

After the test split was scored (``rescore_universal.py``), ``--test`` compares per-image test scores: the gap of
each ``--fast`` head to ``universal`` in the issue's form (mean over modalities of dataset means) with a 95 %
bootstrap interval (images resampled within each dataset, pairs kept), and the paired change between the heads:

    python benchmarks/fast_head_budget.py --test OLD_FAST.csv NEW_SCORES_DIR
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.experiments.universal_report import modality_table, read_table, task_accuracy
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
    mean = modalities[-1]  # the mean over modalities
    row: dict[str, Any] = {"fast head": name}
    for kind in KINDS:
        row[f"val_{kind}"] = mean[f"dice_{kind}"]
    row["val_task_accuracy"] = task_accuracy(scores["fast"])[-1]["accuracy"]
    for r in modalities[:-1]:
        row[f"fast_{r['modality']}"] = r["dice_fast"]
    return row


def modality_form_gap(universal: list[dict[str, str]], fast: list[dict[str, str]], n_boot: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """``universal`` − ``fast`` Dice in the issue's form (mean over modalities of dataset means) on the same images,
    and its 95 % bootstrap interval (images resampled within each dataset, pairs kept)."""
    from medseg.stats import stratified_bootstrap_ci

    by_case = {r["case"]: float(r["dice"]) for r in fast}
    groups: dict[tuple[str, str], list[float]] = {}
    for r in universal:
        groups.setdefault((r["modality"], r["dataset"]), []).append(float(r["dice"]) - by_case[r["case"]])
    keys = sorted(groups)
    modalities = {k[0] for k in keys}
    # every modality counts once, shared by its datasets: the form as a weighted mean of dataset means
    weights = [1 / (len(modalities) * sum(m == k[0] for m, _ in keys)) for k in keys]
    point = float(np.dot(weights, [np.mean(groups[k]) for k in keys]))
    low, high = stratified_bootstrap_ci([groups[k] for k in keys], n_boot=n_boot, seed=seed, weights=weights)
    return point, low, high


def compare_test(previous_fast: Path, scores: Path, out: Path, candidate: str) -> None:
    """The ``--test`` table: each fast head's gap to ``universal`` on the test split, and their paired change;
    ``candidate``: the new head's row label."""
    from medseg.stats import paired_test

    universal = read_table(scores / "universal.csv")
    heads = {"shipped before (700 steps)": read_table(previous_fast), candidate: read_table(scores / "fast.csv")}
    rows = []
    for name, fast in heads.items():
        gap, low, high = modality_form_gap(universal, fast)
        mean = modality_table({"fast": fast})[-1]  # the mean over modalities
        rows.append({"fast head": name, "test_fast": mean["dice_fast"], "gap_to_universal": gap,
                     "gap_ci95_low": low, "gap_ci95_high": high, "within_0.05": gap <= 0.05})
    old, new = ({r["case"]: float(r["dice"]) for r in rows_} for rows_ in heads.values())
    cases = sorted(old)
    test = paired_test([new[c] for c in cases], [old[c] for c in cases])
    rows[1] |= {"paired_mean_change_per_image": test.mean_diff, "p_wilcoxon": test.p_wilcoxon,
                "images_up": sum(new[c] > old[c] for c in cases), "images_down": sum(new[c] < old[c] for c in cases)}
    emit("Fast head training budget, test", rows, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml")
    ap.add_argument("--model", type=Path, default=REPO / "src/medseg/assets/universal",
                    help="the universal model whose fast head is compared (and whose head the fine-tuning starts "
                         "from)")
    ap.add_argument("--model-label", default="--model's fast head", help="the --model's row in the table")
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--validations", type=int, default=7)
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="fast.seed_offset: a seed replicate of the fine-tuning on the same split")
    ap.add_argument("--run", type=Path, default=REPO / "runs/universal-fast-budget")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs/universal-cpu/cache",
                    help="the image and embedding caches (shared with the in-domain run)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/universal-cpu/fast-budget")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    ap.add_argument("--test", nargs=2, type=Path, metavar=("OLD_FAST_CSV", "SCORES_DIR"),
                    help="compare per-image test scores instead of training (see above)")
    args = ap.parse_intermixed_args()
    candidate_label = f"candidate ({args.steps} steps{f', seed +{args.seed_offset}' if args.seed_offset else ''})"
    if args.test:
        compare_test(args.test[0], args.test[1], args.out, candidate_label)
        return

    exp = UniversalExperiment(load_universal_config(args.config, [
        *args.overrides, f"out_dir={args.run}", f"cache_dir={args.cache_dir}", f"fast.steps={args.steps}",
        f"fast.validations={args.validations}", f"fast.seed_offset={args.seed_offset}"]))
    exp.begin()
    seed_run(args.run, args.model)
    fast_head = exp.stage_fast()
    candidate = args.run / "model"
    if not (candidate / "model.json").is_file():
        replace_parts(args.model, candidate, {"fast_head": fast_head})
    val = [e for e in exp.trained_entries() if e.split == "val"]
    rows = []
    for name, model in ((args.model_label, args.model), (candidate_label, candidate)):
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
