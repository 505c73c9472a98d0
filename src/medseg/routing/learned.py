"""Learned routers over all meta-features (scikit-learn), stored as plain JSON (no pickles), and the protocols that
judge any router fairly: the paper's seeded 80/20 hold-out and k-fold cross-validation, each reported next to the
best single model and the oracle.

Routers share one interface: ``choose_b(features) → (N,) bool`` (True: use model ``b``), ``to_dict()`` and
:func:`rule_from_dict`. Learned routers are fitted as cost-sensitive classifiers: the label is "``b`` scores
higher" and each image weighs by how much the choice matters (``|score_b − score_a|``), so the fit maximises the
routed score rather than the count of right choices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.routing.threshold import ThresholdRule, fit_threshold_rule

Features = Mapping[str, Sequence[float]]


def _matrix(features: Features, names: Sequence[str]) -> np.ndarray:
    return np.stack([np.asarray(features[n], dtype=np.float64) for n in names], axis=1)


def _labels(score_a: Sequence[float], score_b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    return (b > a).astype(int), np.abs(b - a) + 1e-9


@dataclass(frozen=True)
class LogisticRule:
    """``b`` where ``intercept + Σ coef_k (x_k − mean_k) / scale_k > 0``."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def choose_b(self, features: Features) -> np.ndarray:
        x = (_matrix(features, self.features) - np.asarray(self.mean)) / np.asarray(self.scale)
        return x @ np.asarray(self.coef) + self.intercept > 0

    def to_dict(self) -> dict[str, object]:
        return {"kind": "logistic", "features": list(self.features), "mean": list(self.mean),
                "scale": list(self.scale), "coef": list(self.coef), "intercept": self.intercept}


@dataclass(frozen=True)
class TreeRule:
    """A shallow decision tree as arrays (sklearn's layout): node i splits on ``feature[i] ≤ threshold[i]``
    (left) else right; a leaf (``left[i] == -1``) routes to ``b`` when ``leaf_b[i]``."""

    features: tuple[str, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    leaf_b: tuple[bool, ...]

    def choose_b(self, features: Features) -> np.ndarray:
        x = _matrix(features, self.features)
        out = np.empty(len(x), dtype=bool)
        for i, row in enumerate(x):
            node = 0
            while self.left[node] != -1:
                node = self.left[node] if row[self.feature[node]] <= self.threshold[node] else self.right[node]
            out[i] = self.leaf_b[node]
        return out

    def to_dict(self) -> dict[str, object]:
        return {"kind": "tree", "features": list(self.features), "left": list(self.left), "right": list(self.right),
                "feature": list(self.feature), "threshold": list(self.threshold), "leaf_b": list(self.leaf_b)}


Rule = ThresholdRule | LogisticRule | TreeRule


def rule_from_dict(d: Mapping[str, object]) -> Rule:
    """Inverse of ``to_dict`` for every router kind (``kind`` absent: a threshold rule)."""
    kind = d.get("kind", "threshold")
    if kind == "threshold":
        return ThresholdRule.from_dict(d)
    if kind == "logistic":
        return LogisticRule(tuple(d["features"]), tuple(d["mean"]), tuple(d["scale"]), tuple(d["coef"]),
                            float(d["intercept"]))
    if kind == "tree":
        return TreeRule(tuple(d["features"]), tuple(d["left"]), tuple(d["right"]), tuple(d["feature"]),
                        tuple(float(t) for t in d["threshold"]), tuple(bool(b) for b in d["leaf_b"]))
    raise ValueError(f"unknown router kind {kind!r}")


def _constant_if_one_class(y: np.ndarray) -> ThresholdRule | None:
    if y.min() == y.max():
        return ThresholdRule(None, 0.0, bool(y[0]))
    return None


def fit_logistic_rule(features: Features, score_a: Sequence[float], score_b: Sequence[float], *,
                      c: float = 1.0) -> Rule:
    """Cost-sensitive L2 logistic regression on standardised features (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression

    names = tuple(features)
    x = _matrix(features, names)
    y, w = _labels(score_a, score_b)
    if (const := _constant_if_one_class(y)) is not None:
        return const
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=c).fit((x - mean) / scale, y, sample_weight=w)
    return LogisticRule(names, tuple(mean.tolist()), tuple(scale.tolist()), tuple(clf.coef_[0].tolist()),
                        float(clf.intercept_[0]))


def fit_tree_rule(features: Features, score_a: Sequence[float], score_b: Sequence[float], *,
                  max_depth: int = 2, min_samples_leaf: int = 3, seed: int = 0) -> Rule:
    """Cost-sensitive shallow decision tree (scikit-learn, depth ``max_depth``)."""
    from sklearn.tree import DecisionTreeClassifier

    names = tuple(features)
    x = _matrix(features, names)
    y, w = _labels(score_a, score_b)
    if (const := _constant_if_one_class(y)) is not None:
        return const
    t = DecisionTreeClassifier(max_depth=max_depth, min_samples_leaf=min_samples_leaf, random_state=seed)
    t.fit(x, y, sample_weight=w)
    tree = t.tree_
    leaf_b = tuple(bool(np.argmax(v[0]) == list(t.classes_).index(1)) for v in tree.value)
    return TreeRule(names, tuple(int(i) for i in tree.children_left), tuple(int(i) for i in tree.children_right),
                    tuple(max(int(f), 0) for f in tree.feature), tuple(float(v) for v in tree.threshold), leaf_b)


FITTERS: dict[str, Callable[..., Rule]] = {"threshold": fit_threshold_rule, "logistic": fit_logistic_rule,
                                           "tree": fit_tree_rule}


@dataclass(frozen=True)
class RouterEvaluation:
    """Held-out scores of a router protocol: ``routed`` (mean routed score over the held-out images), ``best_single``
    (the better of always-a / always-b, chosen on the fitting rows, scored on the held-out rows), ``oracle`` (the
    per-image best), ``always_a``, ``always_b``, ``n`` held-out images, and per-image routed scores (for intervals)."""

    routed: float
    best_single: float
    oracle: float
    always_a: float
    always_b: float
    n: int
    routed_per_image: tuple[float, ...]
    best_single_per_image: tuple[float, ...]


def _subset(features: Features, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64)[idx] for k, v in features.items()}


def _evaluate(folds: list[tuple[np.ndarray, np.ndarray]], features: Features, a: np.ndarray, b: np.ndarray,
              fitter: Callable[..., Rule]) -> RouterEvaluation:
    routed, single, held = [], [], []
    for fit_idx, test_idx in folds:
        rule = fitter(_subset(features, fit_idx), a[fit_idx], b[fit_idx])
        pick = rule.choose_b(_subset(features, test_idx))
        routed.append(np.where(pick, b[test_idx], a[test_idx]))
        single.append(b[test_idx] if b[fit_idx].mean() > a[fit_idx].mean() else a[test_idx])
        held.append(test_idx)
    idx = np.concatenate(held)
    r, s = np.concatenate(routed), np.concatenate(single)
    return RouterEvaluation(float(r.mean()), float(s.mean()), float(np.maximum(a[idx], b[idx]).mean()),
                            float(a[idx].mean()), float(b[idx].mean()), len(idx), tuple(r.tolist()), tuple(s.tolist()))


def holdout(features: Features, score_a: Sequence[float], score_b: Sequence[float], fitter: Callable[..., Rule], *,
            test_fraction: float = 0.2, seed: int = 0) -> RouterEvaluation:
    """The paper's protocol with a seeded shuffle: fit on ``1 − test_fraction`` of the rows, score the rest."""
    a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(a))
    n_test = max(1, round(test_fraction * len(a)))
    return _evaluate([(order[n_test:], order[:n_test])], features, a, b, fitter)


def cross_validate(features: Features, score_a: Sequence[float], score_b: Sequence[float],
                   fitter: Callable[..., Rule], *, k: int = 5, seed: int = 0) -> RouterEvaluation:
    """k-fold cross-validation (seeded shuffle): every image is scored once by a router that never saw it."""
    a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    if len(a) < 2:
        raise ValueError("cross-validation needs at least two images")
    k = min(k, len(a))
    order = np.random.default_rng(seed).permutation(len(a))
    parts = np.array_split(order, k)
    folds = [(np.concatenate([p for j, p in enumerate(parts) if j != i]), parts[i]) for i in range(k)]
    return _evaluate(folds, features, a, b, fitter)
