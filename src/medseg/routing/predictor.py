"""Per-image routing at inference: each image goes to model ``a`` or ``b`` by a rule on its meta-features."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medseg.errors import InvalidInputError
from medseg.models.io import is_model_folder
from medseg.routing.learned import Rule, rule_from_dict


class _Predicts(Protocol):
    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray | None] | None = None,
                progress: Callable[[int], None] | None = None) -> list[Any]: ...


class RoutedPredictor:
    """A :class:`~medseg.inference.Predictor` look-alike that sends every image to ``a`` or ``b`` (CMMC's
    meta-router: ``a`` = the raw-pre-trained model, ``b`` = the edge-pre-trained one).

    Args:
        rule: a fitted router (``rule.choose_b(features)`` → (N,) bool).
        a, b: the two predictors.
        features: the meta-feature names the rule reads (:func:`medseg.ops.metafeatures.meta_features` keys).

    Shape:
        images: (H, W, 3) uint8 each (the meta-features are defined on uint8).
    """

    def __init__(self, rule: Rule, a: _Predicts, b: _Predicts, features: Sequence[str]) -> None:
        self.rule, self.a, self.b, self.features = rule, a, b, list(features)
        self.counts = {"a": 0, "b": 0}  # images routed to each side so far

    def choose_b(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) bool: which images the rule sends to ``b``."""
        from medseg.ops.metafeatures import meta_features

        if not images:
            return np.zeros(0, bool)
        rows = [meta_features(np.asarray(im)) for im in images]
        return np.asarray(self.rule.choose_b({f: [r[f] for r in rows] for f in self.features}), bool)

    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray | None] | None = None,
                progress: Callable[[int], None] | None = None) -> list[Any]:
        """Predictions in input order; ``counts`` adds up the routes."""
        images = list(images)
        to_b = self.choose_b(images)
        self.counts["b"] += int(to_b.sum())
        self.counts["a"] += int(len(images) - to_b.sum())
        out: list[Any] = [None] * len(images)
        for side, pred in ((False, self.a), (True, self.b)):
            idx = [i for i in range(len(images)) if bool(to_b[i]) == side]
            if not idx:
                continue
            sub_boxes = [boxes[i] for i in idx] if boxes is not None else None
            for i, p in zip(idx, pred.predict([images[i] for i in idx], sub_boxes, progress), strict=True):
                out[i] = p
        return out


def load_router(path: str | Path, *, modality: str, subset: str | None = None, router: str = "threshold"
                ) -> tuple[Rule, dict[str, str], list[str]]:
    """Read a ``routers.json`` written by ``medseg experiment cmmc``.

    Args:
        path: the file (``<out_dir>/report/routers.json``).
        modality: whose rule to use (one rule per modality).
        subset: whose fine-tuned models to use (default: ``modality``; a modality with two targets has one subset
            per target).
        router: ``threshold`` (the paper's), ``logistic`` or ``tree``.

    Returns:
        (rule, {"a": model folder, "b": model folder}, feature names).

    Raises:
        InvalidInputError: unreadable file, an unknown router / modality / subset (the message lists the choices),
            or a model folder it names that is not here.
    """
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(path, f"cannot read the router file: {exc}") from exc
    if spec.get("kind") != "cmmc-router":
        raise InvalidInputError(path, "not a router file (written by `medseg experiment cmmc`: report/routers.json)")
    routers = spec["routers"]
    if router not in routers:
        raise InvalidInputError(path, f"no {router!r} router; it has {', '.join(sorted(routers))}")
    if modality not in routers[router]:
        raise InvalidInputError(path, f"no rule for modality {modality!r}; it has {', '.join(sorted(routers[router]))}")
    subset = subset or modality
    models = {}
    for side in ("a", "b"):
        kind = spec[side]
        if subset not in spec["models"][kind]:
            raise InvalidInputError(path, f"no {kind} model for subset {subset!r}; it has "
                                          f"{', '.join(sorted(spec['models'][kind]))}")
        folder = Path(spec["models"][kind][subset])
        if not folder.is_absolute() and not folder.exists():  # relative to the working directory or to the file
            folder = path.parent / folder if (path.parent / folder).exists() else folder
        if not is_model_folder(folder):
            raise InvalidInputError(path, f"its {kind} model for {subset!r}, {folder}, is not here (the experiment "
                                          "that wrote this file kept its models under its out_dir, which this "
                                          "checkout lacks); rerun `medseg experiment cmmc CONFIG` to rebuild them")
        models[side] = str(folder)
    return rule_from_dict(routers[router][modality]), models, list(spec["features"])
