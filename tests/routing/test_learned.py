"""Learned routers and the evaluation protocols on a case whose best rule is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.routing import FITTERS, ThresholdRule, cross_validate, holdout, rule_from_dict


def _case(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    entropy = rng.uniform(3, 7, n)
    std = rng.uniform(10, 80, n)
    raw = 0.7 + 0.02 * rng.standard_normal(n)
    edge = np.where(entropy > 5, 0.85, 0.55) + 0.02 * rng.standard_normal(n)  # edge wins on busy images
    return {"std": std, "entropy": entropy}, raw, edge


@pytest.mark.parametrize("kind", sorted(FITTERS))
def test_every_router_learns_the_known_rule_and_round_trips(kind: str) -> None:
    feats, raw, edge = _case()
    rule = FITTERS[kind](feats, raw, edge)
    pick = rule.choose_b(feats)
    assert np.mean(pick == (feats["entropy"] > 5)) > 0.9
    again = rule_from_dict(json.loads(json.dumps(rule.to_dict())))
    np.testing.assert_array_equal(again.choose_b(feats), pick)


@pytest.mark.parametrize("protocol", [holdout, cross_validate])
def test_protocols_score_held_out_images_against_single_and_oracle(protocol) -> None:
    feats, raw, edge = _case()
    ev = protocol(feats, raw, edge, FITTERS["threshold"], seed=1)
    assert ev.n == (12 if protocol is holdout else 60)
    assert ev.routed > ev.best_single and ev.routed <= ev.oracle + 1e-12
    assert len(ev.routed_per_image) == ev.n
    assert ev == protocol(feats, raw, edge, FITTERS["threshold"], seed=1)  # seeded


def test_one_class_fits_a_constant_rule() -> None:
    feats = {"std": [1.0, 2.0, 3.0, 4.0]}
    for kind in ("logistic", "tree"):
        assert FITTERS[kind](feats, [0.1] * 4, [0.9] * 4) == ThresholdRule(None, 0.0, True)
