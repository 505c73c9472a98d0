"""Held-out head views: which views of the training images should the prompt-free head train on so that it holds up on
a dataset it never saw?

The in-domain recipe (``configs/universal-cpu.yaml``) trains the head on the cached LiteMedSAM embeddings of the
training images as they are and horizontally flipped (``embeddings.views: [none, hflip]``). This script trains the
held-out run's head (``configs/universal-heldout-cpu.yaml``: without PH2 and CHASE_DB1) once per ``--views`` list,
everything else equal, and scores each head at native resolution **with the true task given** (routing is measured
by ``benchmarks/heldout_routing.py``) on

* the validation images of the trained datasets (does the view cost in-domain quality?),
* the validation images of the held-out datasets (leave-datasets-out validation: the numbers that decide),
* the test images of the held-out datasets (reported, never used to decide).

Decision rule, fixed before the first run: the shipped recipe adopts a view list over ``none, hflip`` only if its
held-out validation Dice (mean over the held-out datasets, each weighted equally) is higher and its trained datasets'
validation Dice (mean over datasets) is at most 0.01 lower.

    python benchmarks/heldout_head_views.py [--held-out configs/universal-heldout-cpu.yaml]
                                            [--views none,hflip --views none,jitter1,jitter2,zoom1]

A view list equal to the held-out config's ``embeddings.views`` reuses that run's head (``out_dir/head``); any other
trains in ``<out_dir>-views/<views>`` (about 17 min of 1,400 steps on 2 cores, plus each missing view's embeddings of
the 1,191 training images, about 20 min). Caches are shared through the config's ``cache_dir``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from _common import emit, mark_adopted
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.metrics.segmentation import group_means
from medseg.training.embedding_cache import VIEWS

REPO = Path(__file__).resolve().parents[1]
BASELINE = "none,hflip"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", type=Path, default=REPO / "configs/universal-heldout-cpu.yaml",
                    help="the held-out config (data, split, held-out datasets, head settings, caches)")
    ap.add_argument("--views", action="append", default=None,
                    help=f"comma-separated views of one variant (repeatable; default: {BASELINE} and the config's)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    args = ap.parse_args()

    base = load_universal_config(args.held_out)
    own = ",".join(base.embeddings.views)
    variants = args.views or list(dict.fromkeys([BASELINE, own]))
    for v in variants:
        bad = [x for x in v.split(",") if x not in VIEWS]
        if bad:
            raise SystemExit(f"--views {v}: unknown view(s) {', '.join(bad)} (known: {', '.join(VIEWS)})")
    held = set(base.held_out)
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for v in variants:
        views = v.split(",")
        overrides = [] if v == own else [f"embeddings.views={views}",
                                         f"out_dir={base.out_dir}-views/{'-'.join(views)}"]
        exp = UniversalExperiment(load_universal_config(args.held_out, overrides))
        exp.begin()
        exp.stage_split()
        exp.stage_embeddings()
        head = exp.stage_head()
        entries = [e for e in exp.entries()
                   if e.split == "val" or (e.split == "test" and e.dataset in held)]
        scores = exp.score_engines(entries, head, {}, exp.out / "head_views", prefix="true_task")["head"]
        tested = {(e.dataset, e.case_id) for e in entries if e.split == "test"}
        scored = [{**r, "split": "test" if (r["dataset"], r["case"]) in tested else "val",
                   "held_out": r["dataset"] in held} for r in scores]
        by = ("split", "dataset", "held_out")
        n = group_means(scored, by, agg=len)
        rows += [{"views": v, "split": split, "dataset": d, "held_out": is_held, "n": int(n[split, d, is_held]),
                  "dice_true_task": dice} for (split, d, is_held), dice in group_means(scored, by).items()]
        means = group_means(scored, ("split", "held_out"), within="dataset")  # every dataset weighs the same
        summary.append({"views": v, "val_trained": means.get(("val", False), float("nan")),
                        "val_held_out": means.get(("val", True), float("nan")),
                        "test_held_out": means.get(("test", True), float("nan")), "head": str(head)})
    if BASELINE in variants:
        mark_adopted(summary, "views", BASELINE)
    print(f"heads trained without {', '.join(sorted(held))}; Dice with the true task, native resolution; "
          "means over datasets")
    emit("Held-out head views", rows, args.out / "universal-heldout-cpu")
    emit("Held-out head views summary", summary, args.out / "universal-heldout-cpu")


if __name__ == "__main__":
    main()
