"""The threshold search finds a known best rule, including the constant ones, and agrees with brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.routing import ThresholdRule, fit_threshold_rule, routed_score


def test_known_rule_is_found() -> None:
    entropy = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    std = np.array([5.0, 1.0, 4.0, 2.0, 6.0, 3.0])  # unrelated to who wins
    raw = np.array([0.9, 0.8, 0.9, 0.3, 0.2, 0.1])
    edge = np.array([0.5, 0.5, 0.5, 0.6, 0.7, 0.8])  # edge wins where entropy > 3.5
    rule = fit_threshold_rule({"std": std, "entropy": entropy}, raw, edge)
    assert rule == ThresholdRule("entropy", 3.5, True)
    assert routed_score(rule, {"std": std, "entropy": entropy}, raw, edge) == pytest.approx(np.mean(
        [0.9, 0.8, 0.9, 0.6, 0.7, 0.8]))
    assert rule.describe("raw", "edge") == "edge if entropy > 3.5 else raw"
    assert ThresholdRule.from_dict(rule.to_dict()) == rule


def test_constant_rules_win_ties_and_dominance() -> None:
    f = {"std": [1.0, 2.0, 3.0]}
    assert fit_threshold_rule(f, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) == ThresholdRule(None, 0.0, False)
    assert fit_threshold_rule(f, [0.1, 0.2, 0.3], [0.9, 0.9, 0.9]) == ThresholdRule(None, 0.0, True)
    assert ThresholdRule(None, 0.0, True).describe("raw", "edge") == "always edge"


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 4), min_size=n, max_size=n),
    st.lists(st.floats(0, 1), min_size=n, max_size=n),
    st.lists(st.floats(0, 1), min_size=n, max_size=n))))
def test_search_equals_brute_force(case: tuple[list[int], list[float], list[float]]) -> None:
    v, a, b = (np.asarray(x, dtype=float) for x in case)
    feats = {"f": v}
    rule = fit_threshold_rule(feats, a, b)
    candidates = [ThresholdRule(None, 0.0, False), ThresholdRule(None, 0.0, True)]
    for thr, up in itertools.product(np.unique(v) + 0.5, (False, True)):
        candidates.append(ThresholdRule("f", float(thr), up))
    best = max(routed_score(c, feats, a, b) for c in candidates)
    assert routed_score(rule, feats, a, b) == pytest.approx(best, abs=1e-9)
