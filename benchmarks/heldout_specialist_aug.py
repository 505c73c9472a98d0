"""Held-out specialist augmentation: does a specialist trained with strong photometric and scale augmentation hold
up better on a dataset of its target that it never saw?

The held-out run (``configs/universal-heldout-cpu.yaml``) trains the retinal-vessel specialist on DRIVE alone and
measured CHASE_DB1 (test) at 0.655 with the true task, 0.162 below the in-domain 0.818. CHASE_DB1 is another camera
(Nidek NM-200-D, 30° field, children's eyes, uneven illumination) than DRIVE (Canon CR5, 45°), so the reference
recipe's mild intensity augmentation (``intensity_p`` 0.15, ``gamma_p`` 0.3) and small affine (p 0.2, scale
0.85–1.15) may be the weak link. This script trains the held-out run's specialist for each ``--variant`` (everything
else equal: data, split, seed, budget) and scores it at native resolution, with the true task, on

* the validation images of the trained datasets (does the augmentation cost in-domain quality?),
* the validation images of the held-out datasets (leave-datasets-out validation: the numbers that decide),
* the test images of every dataset of the target (reported, never used to decide).

Variants (:class:`SpecialistConfig` fields): ``reference`` — the reference recipe; ``domain`` —
:func:`colour_jitter` on half the patches (white balance, saturation, grey, blur, strong brightness/contrast/gamma)
and the affine on half the patches with scale 0.7–1.4 (vessel calibre in pixels differs between cameras and
resolutions); ``reference-ms`` — ``reference`` segmenting each image also at 0.8× and averaging the logits
(``scales``, multi-scale test-time augmentation); ``ensemble`` — the mean logits of the ``reference`` and
``domain`` U-Nets (``ensemble_augment``, :mod:`medseg.models.ensemble`); ``ensemble-ms`` — both. The composite
variants train nothing of their own: their members are the single variants' U-Nets (copied in when trained).

Decision rule, fixed before the first run: a variant is adopted over ``reference`` only if its held-out validation
Dice (mean over the held-out datasets) is higher and its trained datasets' validation Dice is at most 0.01 lower.
The composite variants were added after an inference-only probe of scales and of the two U-Nets' mean on the same
validation images (test printed beside them); the same rule holds for them, and of several adopted variants the
one with the highest held-out validation Dice is the recipe's. The ``-tta`` variants (``reference-tta``,
``ensemble-tta``, ``ensemble-ms-tta``) add flip test-time augmentation (``tta``: the four flips' logits averaged,
as nnU-Net mirrors by default; the U-Nets were trained with flips) to ``reference``, ``ensemble`` and
``ensemble-ms``; they were added with no score of theirs seen, and the same rule decides, on the seed replicate's
run (``--seed-offset 1``: the first seed's U-Nets were lost with a machine move; its table stays without them).

    python benchmarks/heldout_specialist_aug.py [--held-out configs/universal-heldout-cpu.yaml]
        [--target retinal-vessel] [--variant reference --variant domain] [--minutes M | --steps N]

``--stage in-domain`` then trains a variant on the in-domain config (``configs/universal-cpu.yaml``: every dataset
of the target; the shipped specialist's members are taken for the single variants they are) and compares it with
``reference`` there, the shipped ``universal`` model's specialist (its first member when it ships an ensemble),
on the same validation images (rule, fixed before the run: the variant replaces it only if it was adopted above
and its validation Dice, mean over the target's datasets, is at most 0.01 lower) and test images (reported):

    python benchmarks/heldout_specialist_aug.py --stage in-domain --variant domain --variant ensemble-ms

``--seed-offset K`` repeats the held-out stage with every U-Net trained with seed + K (``<variant>-seed<K>``): a seed
replicate of the study on the same split.

Each variant trains in ``<out_dir>-specialist-aug/<variant>`` (resumable); variants can run as separate processes
side by side (``--variant domain`` in one, ``--variant reference`` in the other, one thread each), and a last call
without training left to do prints the table of all of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from _common import emit, mark_adopted
from medseg.experiments.universal import SpecialistConfig, UniversalExperiment, load_universal_config
from medseg.metrics.segmentation import group_means
from medseg.models.io import is_model_folder

REPO = Path(__file__).resolve().parents[1]
BASELINE = "reference"
#: the strong augmentation (``AugmentOptions`` fields)
DOMAIN: dict[str, Any] = {"flips": True, "rot90": True, "affine_p": 0.5, "scale": [0.7, 1.4], "intensity_p": 0.15,
                          "gamma_p": 0.3, "colour_p": 0.5}
#: what makes a variant one U-Net at one scale (set explicitly: the configs' own specialist is an ensemble now)
SINGLE: dict[str, Any] = {"ensemble_augment": [], "scales": [1.0], "tta": False}
REFERENCE = SpecialistConfig().augment
#: variant name → the :class:`SpecialistConfig` fields it sets over the config's own (every field the variants
#: differ in, so a variant means the same whatever the config's recipe is)
VARIANTS: dict[str, dict[str, Any]] = {
    BASELINE: {"augment": REFERENCE, **SINGLE},
    "domain": {"augment": DOMAIN, **SINGLE},
    "reference-ms": {"augment": REFERENCE, "ensemble_augment": [], "scales": [1.0, 0.8], "tta": False},
    "ensemble": {"augment": REFERENCE, "ensemble_augment": [DOMAIN], "scales": [1.0], "tta": False},
    "ensemble-ms": {"augment": REFERENCE, "ensemble_augment": [DOMAIN], "scales": [1.0, 0.8], "tta": False},
    "reference-tta": {"augment": REFERENCE, "ensemble_augment": [], "scales": [1.0], "tta": True},
    "ensemble-tta": {"augment": REFERENCE, "ensemble_augment": [DOMAIN], "scales": [1.0], "tta": True},
    "ensemble-ms-tta": {"augment": REFERENCE, "ensemble_augment": [DOMAIN], "scales": [1.0, 0.8], "tta": True},
}


def run_variant(config: Path, name: str, target: str, budget: dict[str, Any]) -> list[dict[str, Any]]:
    """Train (or resume, or reuse) ``name``'s specialist on ``config``'s data and score it on the target's
    validation and test images; per-image rows with variant, split and held_out. A composite variant's members are
    copied from the single variants' runs where those finished (same settings: the stage record checks it)."""
    from medseg.models.io import load_model

    exp = variant_experiment(config, name, target, budget)
    for k, member in enumerate(exp.cfg.specialists[target].members()):
        mine = exp.out / "specialists" / (target if k == 0 else f"{target}-member{k}")
        single = single_variant(member.augment)
        theirs = exp.out.parent / variant_dir(str(single), budget) / "specialists" / target
        if single not in (None, name) and is_model_folder(theirs / "model") and not mine.exists():
            shutil.copytree(theirs, mine, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    return score_specialist(exp, load_model(exp.stage_specialists()[target]), target, name)


def single_variant(augment: dict[str, Any]) -> str | None:
    """The single (one U-Net, one scale, no TTA) variant trained with ``augment``, if there is one."""
    return next((v for v in VARIANTS if VARIANTS[v] == {"augment": augment, **SINGLE}), None)


def variant_dir(name: str, budget: dict[str, Any]) -> str:
    """The folder name of variant ``name``'s run: ``<name>``, or ``<name>-seed<k>`` for a seed replicate."""
    return f"{name}-seed{budget['seed_offset']}" if budget.get("seed_offset") else name


def variant_experiment(config: Path, name: str, target: str, budget: dict[str, Any]) -> UniversalExperiment:
    """``config``'s experiment with ``target``'s specialist set as variant ``name`` says, in
    ``<out_dir>-specialist-aug/<name>``, its split stage done."""
    base = load_universal_config(config)
    if target not in base.specialists:
        raise SystemExit(f"--target {target}: {config} has no specialist for it "
                         f"(specialists: {', '.join(base.specialists)})")
    spec = {**base.specialists[target].model_dump(mode="json"), **budget, **VARIANTS[name]}
    overrides = [f"out_dir={base.out_dir}-specialist-aug/{variant_dir(name, budget)}",
                 f"specialists={json.dumps({target: spec})}"]
    exp = UniversalExperiment(load_universal_config(config, overrides))
    exp.begin()
    exp.stage_split()
    return exp


def seed_shipped_members(config: Path, target: str) -> None:
    """In domain, the single variants the shipped ``universal`` model's specialist is made of are its members (the
    in-domain config trained them: member 0 with the reference recipe, then one per ``ensemble_augment`` entry):
    put each in its variant's run, so ``reference`` is the shipped specialist's first member and no member is
    trained twice."""
    from medseg.models.ensemble import ensemble_member_folder
    from medseg.weights import shipped_model_folder

    shipped = shipped_model_folder("universal") / "specialists" / target
    for k, member in enumerate(load_universal_config(config).specialists[target].members()):
        name = single_variant(member.augment)
        if name is None:
            continue
        folder = variant_experiment(config, name, target, {}).out / "specialists" / target / "model"
        if not is_model_folder(folder):
            ensemble_member_folder(shipped, k, folder)


def score_specialist(exp: UniversalExperiment, loaded: Any, target: str, name: str) -> list[dict[str, Any]]:
    """Per-image rows of one specialist (a loaded model folder) on the target's validation and test images."""
    from medseg.evaluation import score_entries
    from medseg.inference import Predictor

    held = set(exp.cfg.held_out)
    entries = [e for e in exp.entries() if exp.task_of(e.dataset) == target and e.split in ("val", "test")]
    predictor = Predictor.for_model(loaded)
    scores = score_entries(entries, lambda e: predictor, csv_path=exp.out / "scores" / f"{target}.csv",
                           columns=lambda e: {"split": e.split, "held_out": str(e.dataset in held)})
    return [{**r, "variant": name, "held_out": str(r["held_out"]) == "True"} for r in scores]


def tables(rows: list[dict[str, Any]], names: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (variant, split, dataset) mean Dice, and per variant the means over datasets of each split part."""
    by = ("variant", "split", "dataset", "held_out")
    n = group_means(rows, by, agg=len)
    table = [{"variant": v, "split": s, "dataset": d, "held_out": h, "n": int(n[v, s, d, h]), "dice_true_task": x}
             for (v, s, d, h), x in group_means(rows, by).items()]
    means = group_means(rows, ("variant", "split", "held_out"), within="dataset")  # every dataset weighs the same
    summary = [{"variant": v, "settings": json.dumps(VARIANTS[v]),
                "val_trained": means.get((v, "val", False), float("nan")),
                "val_held_out": means.get((v, "val", True), float("nan")),
                "test_trained": means.get((v, "test", False), float("nan")),
                "test_held_out": means.get((v, "test", True), float("nan"))} for v in names]
    return table, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held-out", type=Path, default=REPO / "configs/universal-heldout-cpu.yaml",
                    help="the held-out config (data, split, held-out datasets, specialist settings, caches)")
    ap.add_argument("--in-domain", type=Path, default=REPO / "configs/universal-cpu.yaml",
                    help="the in-domain config (--stage in-domain)")
    ap.add_argument("--stage", choices=("held-out", "in-domain"), default="held-out",
                    help="held-out: the variants without the held-out datasets; in-domain: a variant on every "
                         "dataset of the target against the shipped specialist")
    ap.add_argument("--target", default="retinal-vessel", help="the specialist's target")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), default=None,
                    help=f"variant(s) to train and score (repeatable; default: all: {', '.join(VARIANTS)})")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training budget, minutes on 2 cores (default: the config's)")
    budget.add_argument("--steps", type=int, help="a fixed number of optimiser steps instead (smoke tests)")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="held-out stage: a seed replicate (the specialists' seed_offset; runs in <variant>-seed<k>, "
                         "tables titled with the seed)")
    ap.add_argument("--label", default="",
                    help="appended to the held-out tables' titles (and so their file names), e.g. ', seed 0 "
                         "retrained' for a rerun that must not overwrite the committed tables")
    ap.add_argument("--table", action="store_true",
                    help="with --variant: afterwards train what is missing and print the table of every variant")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    args = ap.parse_args()

    budget = {"minutes": args.minutes} if args.minutes else {"steps": args.steps} if args.steps else {}
    if args.seed_offset:
        if args.stage == "in-domain":
            raise SystemExit("--seed-offset: held-out stage only (in domain the reference run is the shipped one)")
        budget["seed_offset"] = args.seed_offset
    seed = (f", seed offset {args.seed_offset}" if args.seed_offset else "") + args.label
    if args.stage == "in-domain":
        seed_shipped_members(args.in_domain, args.target)
        names = [BASELINE, *(v for v in args.variant or ["domain"] if v != BASELINE)]
        rows = [r for name in names for r in run_variant(args.in_domain, name, args.target, budget)]
        table, summary = tables(rows, names)
        for s in summary:  # every dataset is trained on: no held-out columns
            del s["val_held_out"], s["test_held_out"]
            s["replace"] = s["variant"] != BASELINE and s["val_trained"] >= summary[0]["val_trained"] - 0.01
        print(f"{args.target} specialists trained on every dataset of the target vs the reference run (the "
              "shipped model's specialist); Dice with the true task, native resolution; means over datasets")
        emit("In-domain specialist augmentation", table, args.out / "universal-cpu")
        emit("In-domain specialist augmentation summary", summary, args.out / "universal-cpu")
        return
    for name in args.variant or []:  # train and score the named variants only
        run_variant(args.held_out, name, args.target, budget)
    if args.variant and not args.table:
        return
    rows = [r for name in VARIANTS for r in run_variant(args.held_out, name, args.target, budget)]
    table, summary = tables(rows, list(VARIANTS))
    mark_adopted(summary, "variant", BASELINE)
    adopted = [s for s in summary if s["adopt"]]
    chosen = max(adopted, key=lambda s: s["val_held_out"])["variant"] if adopted else BASELINE
    for s in summary:  # of the adopted variants, the best on the held-out validation images
        s["chosen"] = s["variant"] == chosen
    print(f"{args.target} specialists trained without the held-out datasets; Dice with the true task, native "
          "resolution; means over datasets")
    emit(f"Held-out specialist augmentation{seed}", table, args.out / "universal-heldout-cpu")
    emit(f"Held-out specialist augmentation summary{seed}", summary, args.out / "universal-heldout-cpu")

if __name__ == "__main__":
    main()
