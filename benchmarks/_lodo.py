"""The leave-datasets-out setup shared by the routing studies (``lodo_routing.py``, ``batch_routing.py``): the
pooled cached embeddings of every split, and the recipe's classifier refit without a set of datasets."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import torch

from medseg.experiments.universal import UniversalExperiment, load_universal_config
from medseg.models.io import load_model
from medseg.training.dataset import open_cache
from medseg.training.task_classifier import fit_task_classifier, pooled_embeddings

REPO = Path(__file__).resolve().parents[1]


def add_lodo_arguments(ap: argparse.ArgumentParser) -> None:
    """The options every leave-datasets-out study takes: the recipe, the head, the encoder, the folds, the seeds."""
    ap.add_argument("--config", type=Path, default=REPO / "configs/universal-cpu.yaml")
    ap.add_argument("--head", type=Path, default=REPO / "src/medseg/assets/universal/head",
                    help="a head model folder: its task list and classifier shape (its weights are re-initialised)")
    ap.add_argument("--encoder", choices=("main", "fast"), default="main",
                    help="the embeddings the classifier reads: the canvas (256²) or the --fast encoder's")
    ap.add_argument("--folds", nargs="+", default=["ph2,chasedb1", "isic2017,drive"],
                    help="comma-separated datasets held out together")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])


class LodoSetup:
    """Pooled features, labels and datasets of the universal recipe's cached embeddings, and refits of its task
    classifier without given datasets.

    Args:
        config: the recipe (its ``classifier:`` section, data, split and caches).
        head: a head model folder: its task list and classifier shape (the classifier is re-initialised per fit).
        encoder: ``main`` (the 256² canvas LiteMedSAM reads) or ``fast`` (the ``--fast`` encoder's embeddings).
        parts: the splits to load (``train`` reads the recipe's views, the others the images as they are).
    """

    def __init__(self, config: Path, head: Path, encoder: str = "main",
                 parts: tuple[str, ...] = ("train", "val")) -> None:
        self.exp = UniversalExperiment(load_universal_config(config))
        self.exp.begin()
        refit = self.exp.cfg.classifier
        if refit is None:
            raise SystemExit(f"{config}: no classifier section to refit")
        self.refit = refit
        enc = self.exp.fast_encoder_options() if encoder == "fast" else None
        views = {p: (list(refit.views) if p == "train" else ["none"]) for p in parts}
        caches = self.exp.embedding_caches(views, enc)
        self.info = {p: open_cache(f).info for p, f in self.exp.image_caches(parts).items()}
        self.base_model = load_model(head).model  # copied by every fit
        self.tasks: list[str] = list(self.base_model.tasks)
        self.datasets = {p: [r["dataset"] for r in self.info[p]] for p in parts}
        self.labels = {p: torch.tensor([self.tasks.index(self.exp.task_of(d)) for d in self.datasets[p]])
                       for p in parts}
        self.features = {p: {v: pooled_embeddings(caches[p][v]) for v in vs} for p, vs in views.items()}

    def rows(self, part: str, datasets: tuple[str, ...] | set[str], keep: bool = True) -> list[int]:
        """Rows of ``part`` whose dataset is in ``datasets`` (``keep=False``: is not)."""
        return [i for i, d in enumerate(self.datasets[part]) if (d in datasets) == keep]

    def fit(self, held: tuple[str, ...], seed: int, **overrides: Any) -> tuple[torch.nn.Module, float]:
        """The classifier refitted as the recipe does, without ``held`` (``overrides``: fields of the
        ``classifier:`` section): the model and its validation accuracy on the other datasets."""
        rows, vrows = self.rows("train", held, keep=False), self.rows("val", held, keep=False)
        model = copy.deepcopy(self.base_model)
        views = self.refit.views
        x = torch.cat([self.features["train"][v][rows] for v in views])
        cfg = self.refit.model_copy(update={"keep_before": False, "seed": seed, **overrides})
        res = fit_task_classifier(model, x, self.labels["train"][rows].repeat(len(views)),
                                  self.features["val"]["none"][vrows], self.labels["val"][vrows], cfg)
        return model, float(res.val_accuracy)

    def probs(self, model: torch.nn.Module, part: str, rows: list[int]) -> torch.Tensor:
        """(len(rows), K) the classifier's task probabilities of ``part``'s images as they are."""
        with torch.no_grad():
            return model.classifier.head(self.features[part]["none"][rows]).softmax(1)
