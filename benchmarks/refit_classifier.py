"""Refit a ``universal`` model's task classifiers — the head's and, when it has one, the ``--fast`` head's — with a
recipe's ``classifier:`` settings (plus overrides), on the cached embeddings, into a new model folder; every other
weight is copied. The way to carry a change of the classifier recipe into a shipped model without retraining its
heads (a classifier refit touches nothing else: ``medseg.training.task_classifier``).

    python benchmarks/refit_classifier.py src/medseg/assets/universal runs/universal-refit \\
        classifier.label_smoothing=0.1
    python benchmarks/rescore_universal.py runs/universal-refit/model --previous benchmarks/results/universal-cpu \\
        --out benchmarks/results/universal-cpu/rescored

The recipe's classifier stage lets the head's jointly trained classifier compete as step 0 (``keep_before``). A
shipped folder no longer has that one: its classifier is the previous refit, the thing being replaced. So this
refit starts fresh (``keep_before: false``) unless an override says otherwise. Writes ``OUT/classifier/`` and
``OUT/fast/classifier/`` (history, summary with validation accuracy per dataset) and ``OUT/model``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.models.io import read_model_meta
from medseg.models.universal import replace_parts

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a universal model folder")
    ap.add_argument("out", type=Path, help="the run folder (the new model goes to OUT/model)")
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs/universal-cpu/cache",
                    help="the image and embedding caches (shared with the in-domain run)")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value (e.g. classifier.label_smoothing=0.1)")
    args = ap.parse_args()
    exp = UniversalExperiment(load_universal_config(args.config, [
        "classifier.keep_before=false", *args.overrides, f"out_dir={args.out}", f"cache_dir={args.cache_dir}"]))
    exp.begin()
    parts = read_model_meta(args.model)["parts"]
    new = {"head": exp.refit_classifier(args.model / "head", args.out / "classifier")}
    if "fast_head" in parts:
        new["fast_head"] = exp.refit_classifier(args.model / "fast_head", args.out / "fast" / "classifier",
                                                exp.fast_encoder_options())
    model = replace_parts(args.model, args.out / "model", new)
    for part in new:
        folder = args.out / ("classifier" if part == "head" else "fast/classifier")
        s = json.loads((folder / "summary.json").read_text())
        print(f"{part}: validation task accuracy {s['val_accuracy_before']:.4f} (the folder's classifier) → "
              f"{s['val_accuracy']:.4f} (step {s['chosen_step']})")
    print(f"model: {model}")


if __name__ == "__main__":
    main()
