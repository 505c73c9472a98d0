"""Rescore a ``universal`` model folder on the reference test split and rebuild its tables and model card — after a
part was replaced (:func:`medseg.models.universal.replace_parts`, e.g. a retrained specialist), without rerunning
the experiment.

    python benchmarks/rescore_universal.py runs/universal-cpu-swap/model --previous benchmarks/results/universal-cpu \\
        --out benchmarks/results/universal-cpu/rescored

Scores (native resolution, as ``medseg experiment universal`` does): ``universal`` (no prompt, no task), ``--fast``
and ``--fast --keep-specialists``, each engine with the true task, beside the committed LiteMedSAM and reference
U-Net scores of the config's ``baseline`` / ``reference_dir``. A per-image CSV of ``--previous``'s ``scores/`` is
reused only where every part it depends on has the same weights and the same ``model.json`` (how it is fed) in both
model folders (``test_head.csv``: the head;
``fast.csv``: the fast head; ``test_specialist.csv``: every specialist; ``universal.csv``: the head and the
specialists; ``fast_specialists.csv``: the fast head and the specialists; the last three also need the same engines
and routing settings); the rest is scored anew. Writes
``scores/``, ``by_dataset.csv``, ``by_modality.csv``, ``task_accuracy.csv``, ``MODEL_CARD.md`` and
``failure_gallery.png`` under ``--out``, and prints the per-dataset table beside ``--previous``'s.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import emit
from medseg.evaluation import write_csv
from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.experiments.universal_report import (
    dataset_table,
    modality_table,
    read_table,
    reference_scores,
    task_accuracy,
)
from medseg.models.io import read_model_meta
from medseg.weights import sha256_file

REPO = Path(__file__).resolve().parents[1]
#: a per-image CSV → the model parts (prefixes of ``model.json``'s ``parts``) its rows depend on
DEPENDS = {"test_head.csv": ("head",), "fast.csv": ("fast_head", "student"), "test_specialist.csv": ("specialists/",),
           "universal.csv": ("head", "specialists/"), "fast_specialists.csv": ("fast_head", "student", "specialists/")}
#: the CSVs of a model's own routing, which also depend on its task → engine table
ROUTED = ("universal.csv", "fast.csv", "fast_specialists.csv")


def reusable(previous_model: Path, previous_scores: Path, model: Path) -> list[str]:
    """The per-image CSVs of ``previous_scores`` (scores of ``previous_model``) whose parts are unchanged in
    ``model`` (and, for the routed ones, its engines and routing settings)."""
    if not (previous_model / "model.json").is_file():
        return []
    before, after = read_model_meta(previous_model), read_model_meta(model)
    routing = all(before.get(k) == after.get(k) for k in ("engines", "min_confidence", "fast_encoder", "img_size"))
    # a part is unchanged when its weights and its model.json (how it is fed: tiles, scales, tta) are
    changed = {p for p in set(before["parts"]) | set(after["parts"])
               if p not in before["parts"] or before["parts"][p] != after["parts"].get(p)
               or sha256_file(previous_model / p / "model.json") != sha256_file(model / p / "model.json")}
    same = [name for name, prefixes in DEPENDS.items()
            if not any(p.startswith(prefixes) for p in changed)
            and (routing or name not in ROUTED)]
    return [n for n in same if (previous_scores / n).is_file()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a universal model folder")
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml",
                    help="the recipe the model was trained with (data, split, baselines)")
    ap.add_argument("--previous", type=Path, default=REPO / "benchmarks/results/universal-cpu",
                    help="a results folder with scores/ and by_dataset.csv to compare with (and reuse from), and "
                         "the model.json of the model it scored")
    ap.add_argument("--previous-model", type=Path, default=REPO / "src/medseg/assets/universal",
                    help="the model folder --previous scored (its parts' digests decide what is reused)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. split.keep={test: 2} for a "
                                                 "quick look)")
    args = ap.parse_intermixed_args()

    exp = UniversalExperiment(load_universal_config(args.config, [*args.overrides, f"out_dir={args.out / 'run'}"]))
    exp.begin()
    test = [e for e in exp.entries() if e.split == "test"]
    scores_dir = args.out / "scores"
    scores_dir.mkdir(parents=True, exist_ok=True)
    for name in reusable(args.previous_model, args.previous / "scores", args.model):
        if not (scores_dir / name).is_file():
            shutil.copy2(args.previous / "scores" / name, scores_dir / name)
            print(f"reused {name} (its parts are unchanged)")
    scores = exp.score_model(args.model, test, scores_dir)
    tasks = read_model_meta(args.model)["engines"]
    specialists = {t: args.model / "specialists" / t for t, e in tasks.items() if e == "specialist"}
    scores |= exp.score_engines(test, args.model / "head", specialists, scores_dir, prefix="test")
    scores |= exp.score_baselines(test, scores_dir)
    if exp.cfg.reference_dir is not None:
        scores |= reference_scores(exp.cfg.reference_dir, test)
    by_dataset, by_modality = dataset_table(scores), modality_table(scores)
    accuracy = task_accuracy(scores["universal"])
    for name, rows in (("by_dataset", by_dataset), ("by_modality", by_modality), ("task_accuracy", accuracy)):
        write_csv(rows, args.out / f"{name}.csv")
    config = args.config.resolve()
    exp.write_model_card(args.model, args.out, by_dataset, by_modality, accuracy, scores["universal"],
                         config=config.relative_to(REPO) if config.is_relative_to(REPO) else config)
    if (args.previous / "by_dataset.csv").is_file():
        before = {(r["modality"], r["dataset"]): r for r in read_table(args.previous / "by_dataset.csv")}
        cols = [c for c in ("dice_universal", "dice_specialist", "dice_fast", "dice_fast_specialists")
                if c in by_dataset[0]]

        def change(old: dict, new: dict) -> dict[str, str]:
            return {f"{c} (before → now)": f"{float(old.get(c, 'nan')):.3f} → {float(new[c]):.3f}" for c in cols}

        diff = [{"modality": r["modality"], "dataset": r["dataset"],
                 **change(before.get((r["modality"], r["dataset"]), {}), r)} for r in by_dataset]
        if (args.previous / "by_modality.csv").is_file():
            old_mod = {r["modality"]: r for r in read_table(args.previous / "by_modality.csv")}
            diff += [{"modality": r["modality"], "dataset": "", **change(old_mod.get(r["modality"], {}), r)}
                     for r in by_modality if str(r["modality"]).startswith("mean")]
        emit("Rescored universal model beside the previous one", diff, args.out)
    print(json.dumps({"model": str(args.model), "out": str(args.out)}))


if __name__ == "__main__":
    main()
