"""Held-out routing: does the task classifier, refitted on photometric jitters, recognise datasets it never saw?

In the held-out-pairs run (``configs/universal-heldout-cpu.yaml``, trained without PH2 and CHASE_DB1) the jointly
trained classifier sent no CHASE_DB1 test image to the retinal-vessel task (DRIVE's) and 5 of 40 PH2 ones away from
skin lesions, although the engines given the true task stay within 0.10 of the in-domain model. This script refits
the classifier alone, as the in-domain recipe's ``classifier`` stage does (``configs/universal-cpu.yaml``: fresh
seeded head, class-balanced, the step chosen on validation), on the cached LiteMedSAM embeddings of the training
images **without the held-out datasets**, once on the images as they are (``views: [none]``) and once on the
recipe's views (with the jitters), and, with ``--extra-views``, on the recipe's views plus those; it reports each
one's task accuracy on every test dataset. Validation (also without the held-out datasets) chooses the step; the
test images choose nothing. A second table gives each refit's accuracy on the validation images of the trained and
of the held-out datasets: a view is worth adding to the recipe only if it routes the held-out datasets' validation
images better without losing the trained ones (leave-datasets-out validation; the test images stay unseen). The
classifier pools the encoder's tokens without parameters, so no head needs retraining for this.

    python benchmarks/heldout_routing.py [--recipe configs/universal-cpu.yaml]
                                         [--held-out configs/universal-heldout-cpu.yaml]
                                         [--head src/medseg/assets/universal/head] [--extra-views zoom1]
                                         [--out benchmarks/results]

Embeddings come from (or go into) the held-out config's ``cache_dir``: after the in-domain run, only the test
images' embeddings are new (about 6 min on 2 cores), and each extra view's of the training images (about 20 min).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from _common import emit
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.models.io import load_model
from medseg.training.dataset import open_cache
from medseg.training.embedding_cache import VIEWS
from medseg.training.task_classifier import fit_task_classifier, pooled_embeddings

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=REPO / "configs/universal-cpu.yaml",
                    help="the config whose classifier section is refitted")
    ap.add_argument("--held-out", type=Path, default=REPO / "configs/universal-heldout-cpu.yaml",
                    help="the config naming the held-out datasets, the data, split and caches")
    ap.add_argument("--head", type=Path, default=REPO / "src/medseg/assets/universal/head",
                    help="a head model folder: its task list and classifier shape (its weights are re-initialised)")
    ap.add_argument("--extra-views", nargs="*", default=[], choices=VIEWS,
                    help="views to try beside the recipe's (e.g. zoom1)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    args = ap.parse_args()

    refit = load_universal_config(args.recipe).classifier
    if refit is None:
        raise SystemExit(f"{args.recipe}: no classifier section to refit")
    exp = UniversalExperiment(load_universal_config(args.held_out))
    exp.begin()
    held = set(exp.cfg.held_out)
    recipes = [("images as they are", ["none"]), ("+ jitters (the recipe)", list(refit.views))]
    if args.extra_views:
        recipes.append((f"+ jitters + {', '.join(args.extra_views)}", [*refit.views, *args.extra_views]))
    caches = exp.embedding_caches({"train": sorted({v for _, vs in recipes for v in vs}), "val": ["none"],
                                   "test": ["none"]})
    info = {part: open_cache(folder).info for part, folder in exp.image_caches(("train", "val", "test")).items()}
    tasks = list(load_model(args.head).model.tasks)

    def rows_of(part: str, keep_held: bool) -> list[int]:
        return [i for i, r in enumerate(info[part]) if keep_held or r["dataset"] not in held]

    def labels(part: str, rows: list[int]) -> torch.Tensor:
        return torch.tensor([tasks.index(exp.task_of(info[part][i]["dataset"])) for i in rows])

    train_rows, val_rows, test_rows = rows_of("train", False), rows_of("val", False), rows_of("test", True)
    vx, vy = pooled_embeddings(caches["val"]["none"], val_rows), labels("val", val_rows)
    held_val = [i for i, r in enumerate(info["val"]) if r["dataset"] in held]
    hx, hy = pooled_embeddings(caches["val"]["none"], held_val), labels("val", held_val)
    tx, ty = pooled_embeddings(caches["test"]["none"], test_rows), labels("test", test_rows)
    test_datasets = [info["test"][i]["dataset"] for i in test_rows]
    table: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for name, views in recipes:
        model = load_model(args.head).model
        x = torch.cat([pooled_embeddings(caches["train"][v], train_rows) for v in views])
        y = labels("train", train_rows).repeat(len(views))
        fit = fit_task_classifier(model, x, y, vx, vy, refit.model_copy(update={"keep_before": False}))
        with torch.no_grad():
            prob = model.classifier.head(tx).softmax(1)
            held_val_right = (model.classifier.head(hx).argmax(1) == hy).float()
        chosen = prob.argmax(1)
        held_test = [i for i, d in enumerate(test_datasets) if d in held]
        summary.append({"classifier views": f"{name}: {', '.join(views)}", "step": fit.chosen_step,
                        "val_accuracy_trained": fit.val_accuracy, "val_n_trained": len(vy),
                        "val_accuracy_held_out": float(held_val_right.mean()), "val_n_held_out": len(hy),
                        "test_accuracy_held_out": float((chosen[held_test] == ty[held_test]).float().mean()),
                        "test_n_held_out": len(held_test)})
        for d in sorted(set(test_datasets)):
            idx = [i for i, dd in enumerate(test_datasets) if dd == d]
            wrong = sorted({tasks[int(chosen[i])] for i in idx if chosen[i] != ty[i]})
            table.append({"classifier views": f"{name}: {', '.join(views)}", "dataset": d,
                          "held_out": d in held, "n": len(idx),
                          "accuracy": float((chosen[idx] == ty[idx]).float().mean()),
                          "p_true_task": float(prob[idx, ty[idx]].mean()), "chosen_when_wrong": " ".join(wrong),
                          "val_accuracy": fit.val_accuracy, "step": fit.chosen_step})
    print(f"refitted without {', '.join(sorted(held))} (never trained on nor validated on); test split")
    emit("Held-out routing refit", table, args.out / "universal-heldout-cpu")
    emit("Held-out routing refit summary", summary, args.out / "universal-heldout-cpu")


if __name__ == "__main__":
    main()
