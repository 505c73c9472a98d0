"""The CMMC paper's meta-router: per modality, an exhaustive search for the single meta-feature threshold (either
direction) that best routes images between two models, "always A" and "always B" included.

A rule routes image i to model ``b`` when ``value_i > threshold`` (``b_above``) or ``value_i ≤ threshold``
(otherwise), and to ``a`` elsewhere; a constant rule (``feature=None``) always picks one model. The search maximises
the mean routed score on the rows it is fitted on; ties go to the simpler rule (constant first), then to the
feature listed first, then to the lower threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdRule:
    """Route to ``b`` where ``feature`` is above (``b_above``) or at/below ``threshold``; ``feature=None``:
    always ``b`` (``b_above=True``) or always ``a`` (``b_above=False``)."""

    feature: str | None
    threshold: float
    b_above: bool

    def choose_b(self, features: Mapping[str, Sequence[float]]) -> np.ndarray:
        """(N,) bool: True where the rule picks model ``b``."""
        if self.feature is None:
            n = len(next(iter(features.values()))) if features else 0
            return np.full(n, self.b_above)
        v = np.asarray(features[self.feature], dtype=np.float64)
        return v > self.threshold if self.b_above else v <= self.threshold

    def describe(self, a: str = "a", b: str = "b") -> str:
        if self.feature is None:
            return f"always {b if self.b_above else a}"
        op = ">" if self.b_above else "≤"
        return f"{b} if {self.feature} {op} {self.threshold:.4g} else {a}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> ThresholdRule:
        feature = d.get("feature")
        return cls(None if feature is None else str(feature), float(d["threshold"]), bool(d["b_above"]))


def routed_score(rule: ThresholdRule, features: Mapping[str, Sequence[float]], score_a: Sequence[float],
                 score_b: Sequence[float]) -> float:
    """Mean score of the routed choice."""
    pick = rule.choose_b(features)
    return float(np.where(pick, np.asarray(score_b, float), np.asarray(score_a, float)).mean())


def fit_threshold_rule(features: Mapping[str, Sequence[float]], score_a: Sequence[float],
                       score_b: Sequence[float]) -> ThresholdRule:
    """The best rule on these rows (exhaustive: every midpoint between distinct sorted values of every feature,
    both directions, and the two constant rules).

    Shapes: every feature, ``score_a`` and ``score_b`` hold one value per image.
    """
    a, b = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("score_a and score_b need one value per image")
    gain = b - a  # choosing b instead of a
    base = float(a.mean())
    best = ThresholdRule(None, 0.0, False)
    best_score = base
    always_b = float(b.mean())
    if always_b > best_score:
        best, best_score = ThresholdRule(None, 0.0, True), always_b
    for name, values in features.items():
        v = np.asarray(values, dtype=np.float64)
        if v.shape != a.shape:
            raise ValueError(f"feature {name!r} needs one value per image")
        order = np.argsort(v, kind="stable")
        vs, gs = v[order], gain[order]
        below = np.cumsum(gs)  # gain of routing the first k+1 sorted rows to b
        total = below[-1]
        cut = np.flatnonzero(np.diff(vs) > 0)  # split after sorted position k (values differ)
        for k in cut:
            thr = float((vs[k] + vs[k + 1]) / 2)
            for b_above, g in ((False, below[k]), (True, total - below[k])):
                score = base + g / len(a)
                if score > best_score + 1e-12:
                    best, best_score = ThresholdRule(name, thr, b_above), score
    return best
