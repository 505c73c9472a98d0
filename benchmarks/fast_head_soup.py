"""Does averaging the weights of two ``--fast`` head fine-tunings (a uniform model soup) beat the shipped one?

The shipped ``--fast`` head is one fine-tuning (seed 0, 1,400 steps) of the refitted head on LiteMedSAM's 128²
embeddings. Its gap to ``universal`` on the test split, 0.045, is inside the issue's 0.05, but a seed replicate of
the same recipe (``fast.seed_offset=1``) scored 0.057: the target holds for one seed, not for the recipe. Both
fine-tunings start from the same weights, so their mean (Wortsman et al., "Model soups", ICML 2022;
:func:`medseg.models.averaging.average_model_folders`) may score at least as well as either and vary less.

This script averages the two fine-tuned heads (``--ingredients``), refits the soup's task classifier as the recipe's
``classifier:`` section says on the 128² cached embeddings (fresh, ``keep_before: false``, as the shipped fast
classifier was refitted; the seed-1 head gets the same refit for the table), swaps it into the shipped model
(:func:`medseg.models.universal.replace_parts`) and scores the *validation* split through the whole ``--fast`` path
(routing included): ``--fast`` and ``--fast --keep-specialists``.

Adoption rule, fixed before the run (the one of ``fast_head_budget.py``): the soup replaces the shipped fast head only
if its ``--fast`` validation Dice (mean over modalities) is higher, its ``--fast --keep-specialists`` validation Dice
is at most 0.01 lower and its ``--fast`` validation task accuracy is not lower. The test split is scored afterwards
(``rescore_universal.py``; only the fast scores change), never used to decide.

    python benchmarks/fast_head_soup.py          # ~15 min on 2 cores with the 128² embeddings cached
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import emit
from fast_head_budget import KINDS, summarise
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.models.averaging import average_model_folders
from medseg.models.universal import replace_parts

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml")
    ap.add_argument("--model", type=Path, default=REPO / "src/medseg/assets/universal",
                    help="the shipped universal model (its fast head is the baseline)")
    ap.add_argument("--ingredients", nargs="+", type=Path,
                    default=[REPO / "runs/universal-fast-budget/fast/head/model",
                             REPO / "runs/universal-fast-seed1/fast/head/model"],
                    help="fast heads fine-tuned from the same start (before their classifier refit)")
    ap.add_argument("--run", type=Path, default=REPO / "runs/universal-fast-soup")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs/universal-cpu/cache")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/universal-cpu/fast-soup")
    args = ap.parse_args()

    exp = UniversalExperiment(load_universal_config(args.config, [
        f"out_dir={args.run}", f"cache_dir={args.cache_dir}", "classifier.keep_before=false"]))
    exp.begin()
    enc = exp.fast_encoder_options()
    soup_head = args.run / "soup-head"
    if not (soup_head / "model.json").is_file():
        average_model_folders(args.ingredients, soup_head)
    candidates = {"soup of the two (mean weights)": ("soup", soup_head)}
    if len(args.ingredients) > 1:  # the second ingredient alone, with the same classifier refit, for the table
        candidates["seed 1 alone"] = ("seed1", args.ingredients[1])
    models = {"shipped (seed 0)": args.model}
    for label, (slug, head) in candidates.items():
        folder = args.run / slug / "model"
        if not (folder / "model.json").is_file():
            refit = args.run / slug / "classifier"
            if not (refit / "model" / "model.json").is_file():
                exp.refit_classifier(head, refit, enc)
            replace_parts(args.model, folder, {"fast_head": refit / "model"})
        models[label] = folder
    val = [e for e in exp.trained_entries() if e.split == "val"]
    rows = [summarise(label, exp.score_model(folder, val, args.run / "val" / folder.parent.name, only=KINDS))
            for label, folder in models.items()]
    base = rows[0]
    for row in rows:
        row["adopt"] = (row is not base and row["fast head"].startswith("soup") and row["val_fast"] > base["val_fast"]
                        and row["val_fast_specialists"] >= base["val_fast_specialists"] - 0.01
                        and row["val_task_accuracy"] >= base["val_task_accuracy"])
    emit("Fast head soup, validation", rows, args.out)
    print(f"soup model: {models[next(iter(candidates))]}")


if __name__ == "__main__":
    main()
