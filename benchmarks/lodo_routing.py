"""Leave-datasets-out routing: which refit of the task classifier best recognises datasets it never saw?

The universal model names an image's task with a small classifier over LiteMedSAM's pooled tokens
(:class:`medseg.models.task_classifier.TaskClassifier`), refitted on cached embeddings by the recipe's
``classifier:`` stage. Held out of training, unseen datasets of known tasks are routed worse (held-out run 2: PH2
34 / 40, CHASE_DB1 3 / 6 on test), and routing decides most of their Dice. This script measures routing to unseen
datasets without touching a test image: for each fold (a set of datasets of tasks that keep another dataset in
training: ``ph2 chasedb1``, the issue's pair, and the reverse ``isic2017 drive``) it refits the classifier as the
recipe does (its views, class-balanced, 500 full-batch steps, a fresh seeded head, the step chosen on the validation
images of the other datasets) on the training images **without the fold's datasets**, and routes the fold's
training and validation images. Each variant is fitted with ``--seeds``; the table gives mean accuracies.

Rule, fixed before the 256² run (``--encoder main``): the classifier refit takes label smoothing ε (``classifier:
{label_smoothing: ε}``) if, at the main encoder, the mean over the four held-out datasets of the routing accuracy rises
and the in-domain validation accuracy (the classifier fitted on every training dataset, all validation images; mean
over seeds) does not fall. ε = 0.1 is the candidate: the best of eight head variants (linear head, mean-only pooling,
weight decay 0.1, no class balance, label smoothing 0.1, feature-statistics noise, a zoom view, no jitters) in a
first sweep of these folds at the ``--fast`` encoder's 128² embeddings, so the 128² table is where it was picked and
the 256² one checks it on the encoder the shipped classifier reads.

A variant is ``key=value,…`` overrides of the recipe's ``classifier:`` section (``--variants``; the first is the
baseline), e.g. ``ensemble=K``: the mean logits of K heads fitted with seeds s, s + 10, …
(:class:`~medseg.training.task_classifier.ClassifierFitConfig`). The first study compared
``label_smoothing=0.0`` and ``label_smoothing=0.1`` (the defaults; its tables' ``variant`` column was named
``label_smoothing``).

Second study (regularisers; rule fixed before any of its scores was seen). Baseline: the recipe
(``label_smoothing=0.1``). Candidates: ``label_smoothing=0.2``; ``feature_dropout`` 0.3 and 0.6; ``mixup=0.4``;
``ensemble=5`` (each with ε = 0.1). At the 128² encoder the candidate with the highest held-out routing mean whose
in-domain validation accuracy is not below the baseline's goes on; none above the baseline: the study stops. At the
256² encoder it is adopted by the first study's rule (held-out mean rises, in-domain validation accuracy does not
fall). The test rows (``--test``, the same run) are reported only; the rule reads the summary, which no test image
enters. (``OUT=benchmarks/results/universal-cpu/lodo-regularisers``)

    python benchmarks/lodo_routing.py --encoder fast --name "LODO regularisers" --out $OUT \
        --variants label_smoothing=0.1 label_smoothing=0.2 label_smoothing=0.1,feature_dropout=0.3 \
        label_smoothing=0.1,feature_dropout=0.6 label_smoothing=0.1,mixup=0.4 label_smoothing=0.1,ensemble=5
    python benchmarks/lodo_routing.py --encoder main --test --name "LODO regularisers" --out $OUT \
        --variants label_smoothing=0.1 label_smoothing=0.1,ensemble=5 --specialist-scores \
        benchmarks/results/universal-heldout-cpu/specialist-aug/held_out_ensemble-tta_seed0_retrained.csv

``--test`` (after the rule decided) routes the test images of the first fold's datasets with the recipe's seed, and
puts the held-out run's committed per-image Dice (``--held-out-scores``) on that routing: an image routed to its true
task scores what that task's engine scored with the task given (exact), one routed to the task held-out run 2 chose
keeps run 2's Dice (exact), any other gets 0 (a lower bound).

    python benchmarks/lodo_routing.py --encoder fast     # 128² embeddings (cached by the fast stage), ~5 min
    python benchmarks/lodo_routing.py --encoder main --test    # 256²: ~65 min of encoder passes once, then ~5 min
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from _common import emit
from _lodo import LodoSetup, add_lodo_arguments
from medseg.experiments.universal_report import read_table

REPO = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> dict[str, Any]:
    """``key=value,key=value`` → overrides of the ``classifier:`` section (values as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variants: {item!r} is not key=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lodo_arguments(ap)
    ap.add_argument("--variants", nargs="+", default=["label_smoothing=0.0", "label_smoothing=0.1"],
                    help="classifier refits as key=value,… overrides of the recipe's classifier: section; the "
                         "first is the baseline")
    ap.add_argument("--name", default="LODO routing", help="the tables' title (and file names)")
    ap.add_argument("--test", action="store_true", help="also route the first fold's test images (see above)")
    ap.add_argument("--held-out-scores", type=Path,
                    default=REPO / "benchmarks/results/universal-heldout-cpu/scores")
    ap.add_argument("--specialist-scores", type=Path,
                    help="per-image scores (case, dice) of a specialist retrained without the fold's datasets, e.g. "
                         "benchmarks/results/universal-heldout-cpu/specialist-aug/held_out_ensemble-tta_seed0_"
                         "retrained.csv: --test adds the Dice implied with it in place of the held-out run's")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/universal-cpu/lodo-routing")
    args = ap.parse_args()

    lodo = LodoSetup(args.config, args.head, args.encoder, ("train", "val", *(("test",) if args.test else ())))
    tasks, ds, y, info = lodo.tasks, lodo.datasets, lodo.labels, lodo.info
    folds = [tuple(f.split(",")) for f in args.folds]
    refit = lodo.refit

    def fit(held: tuple[str, ...], seed: int, overrides: dict[str, Any]) -> tuple[torch.nn.Module, float]:
        return lodo.fit(held, seed, **overrides)

    def route(model: torch.nn.Module, part: str, rows: list[int]) -> torch.Tensor:
        """(len(rows),) the task each image of ``part`` is routed to."""
        return lodo.probs(model, part, rows).argmax(1)

    table: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    test_models: dict[str, torch.nn.Module] = {}
    for variant in args.variants:
        overrides = parse_variant(variant)
        per: dict[str, list[float]] = {}
        in_domain = []
        for seed in args.seeds:
            in_domain.append(fit((), seed, overrides)[1])
            for held in folds:
                model, _ = fit(held, seed, overrides)
                if held == folds[0] and seed == refit.seed:
                    test_models[variant] = model
                for d in held:
                    hits = []
                    for part in ("train", "val"):
                        rows = [i for i, dd in enumerate(ds[part]) if dd == d]
                        hits += (route(model, part, rows) == y[part][rows]).tolist()
                    per.setdefault(d, []).append(float(np.mean(hits)))
        for d, accs in per.items():
            n = sum(dd == d for p in ("train", "val") for dd in ds[p])
            table.append({"variant": variant, "held_out_dataset": d, "n_images": n,
                          "routing_accuracy": float(np.mean(accs)), "per_seed": " ".join(f"{a:.3f}" for a in accs)})
        summary.append({"variant": variant, "encoder": args.encoder,
                        "held_out_routing_mean": float(np.mean([np.mean(a) for a in per.values()])),
                        "in_domain_val_accuracy": float(np.mean(in_domain)), "seeds": len(args.seeds)})
        print(summary[-1], flush=True)
    base = summary[0]
    for row in summary:
        row["adopt"] = (row is not base and row["held_out_routing_mean"] > base["held_out_routing_mean"]
                        and row["in_domain_val_accuracy"] >= base["in_domain_val_accuracy"])
    slug = f"{args.encoder}_encoder"
    print(f"folds {folds}: each refitted without its datasets; routed: their training and validation images")
    emit(f"{args.name} {slug}", table, args.out)
    emit(f"{args.name} {slug} summary", summary, args.out)
    if args.test:
        emit(f"{args.name} {slug} test", route_test(test_models, folds[0], ds, y, route, tasks,
                                                     args.held_out_scores, info, args.specialist_scores), args.out)


def route_test(models: dict[str, torch.nn.Module], held: tuple[str, ...], ds: dict[str, list[str]],
               y: dict[str, torch.Tensor], route: Any, tasks: list[str], scores: Path,
               info: dict[str, list[dict[str, Any]]], specialist: Path | None = None) -> list[dict[str, Any]]:
    """Per variant and held-out dataset: test routing accuracy and the held-out universal Dice it implies (see the
    module docstring); with ``specialist`` (per-image scores, ``case`` and ``dice``), also the Dice implied when the
    images routed to their true task's specialist score what that specialist scored."""
    run2 = {r["case"]: r for r in read_table(scores / "universal.csv")}
    engine_of = {r["true_task"]: r["engine"] for r in run2.values() if r["task"] == r["true_task"]}
    engine_dice = {}
    for name in ("test_head.csv", "test_specialist.csv"):
        for r in read_table(scores / name):
            engine_dice[(r["case"], "specialist" if "specialist" in name else "head")] = float(r["dice"])
    retrained = {} if specialist is None else {r["case"]: float(r["dice"]) for r in read_table(specialist)}
    rows = []
    for variant, model in models.items():
        for d in held:
            idx = [i for i, dd in enumerate(ds["test"]) if dd == d]
            cases = [info["test"][i]["case"] for i in idx]
            chosen = route(model, "test", idx)
            dice, exact, with_specialist = [], 0, []
            for j, case in enumerate(cases):
                r = run2[case]
                task = tasks[int(chosen[j])]
                if task == r["true_task"]:
                    dice.append(engine_dice[(case, engine_of[task])])
                    with_specialist.append(retrained.get(case, dice[-1]) if engine_of[task] == "specialist"
                                           else dice[-1])
                    exact += 1
                    continue
                if task == r["task"]:
                    dice.append(float(r["dice"]))
                    exact += 1
                else:
                    dice.append(0.0)
                with_specialist.append(dice[-1])
            extra = {} if specialist is None else {"universal_dice_with_specialist": float(np.mean(with_specialist))}
            rows.append({"variant": variant, "dataset": d, "n": len(idx),
                         "routing_accuracy": float((chosen == y["test"][idx]).float().mean()),
                         "held_out_run2_accuracy": float(np.mean([run2[c]["task"] == run2[c]["true_task"]
                                                                  for c in cases])),
                         "universal_dice": float(np.mean(dice)), **extra, "exact_images": exact,
                         "held_out_run2_dice": float(np.mean([float(run2[c]["dice"]) for c in cases]))})
    return rows


if __name__ == "__main__":
    main()
