import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from medseg.routing.label_shift import (
    adapt_prior,
    adjust_posteriors,
    batch_log_likelihood,
    batch_prior,
    fit_temperature,
    gated_prior,
    temper,
)


def _probs(seed: int, n: int, k: int) -> np.ndarray:
    p = np.random.default_rng(seed).dirichlet(np.full(k, 0.5), size=n)
    return p


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 40), st.integers(2, 6))
def test_em_reaches_the_likelihood_maximum(seed: int, n: int, k: int) -> None:
    """L(π) is concave on the simplex, so EM's fixed point is its maximum: an independent constrained optimiser
    (SLSQP on the simplex) finds no higher value, and no random prior beats it."""
    p = _probs(seed, n, k)
    res = adapt_prior(p, tol=1e-10, max_iter=5000)
    best = batch_log_likelihood(p, res.prior)
    opt = minimize(lambda x: -batch_log_likelihood(p, np.clip(x, 1e-12, None)), np.full(k, 1 / k), method="SLSQP",
                   bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                   options={"ftol": 1e-12, "maxiter": 500})
    assert best >= -opt.fun - 1e-6
    for q in np.random.default_rng(seed).dirichlet(np.ones(k), size=20):
        assert best >= batch_log_likelihood(p, q) - 1e-9
    assert res.prior.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(res.probs.sum(1), 1.0)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 30))
def test_order_of_the_images_does_not_matter(seed: int, n: int) -> None:
    p = _probs(seed, n, 4)
    perm = np.random.default_rng(seed + 1).permutation(n)
    a, b = adapt_prior(p), adapt_prior(p[perm])
    np.testing.assert_allclose(a.prior, b.prior, atol=1e-9)
    np.testing.assert_allclose(a.probs[perm], b.probs, atol=1e-9)


def test_likelihood_never_decreases_step_by_step() -> None:
    p = _probs(3, 25, 5)
    values = [batch_log_likelihood(p, adapt_prior(p, max_iter=i, tol=0).prior) for i in range(1, 30)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))


def test_an_ambiguous_image_leans_to_the_batch_task_a_confident_one_keeps_its_own() -> None:
    # nine images clearly task 0, one torn between tasks 0 and 2, one confident task 3 (a rare task in the batch)
    p = np.array([[0.9, 0.04, 0.03, 0.03]] * 9 + [[0.42, 0.03, 0.52, 0.03], [0.02, 0.02, 0.02, 0.94]])
    res = adapt_prior(p)
    assert res.converged
    assert p[9].argmax() == 2 and res.probs[9].argmax() == 0
    assert res.probs[10].argmax() == 3
    assert res.prior.argmax() == 0 and res.prior[1] < 0.02


def test_the_training_prior_is_a_fixed_point_of_a_batch_that_matches_it() -> None:
    p = np.full((6, 3), 1 / 3)
    res = adapt_prior(p)
    np.testing.assert_allclose(res.prior, 1 / 3)
    np.testing.assert_allclose(adjust_posteriors(p, np.full(3, 1 / 3)), p)
    # a non-uniform training prior: posteriors under it are unchanged when the batch prior equals it
    t = np.array([0.5, 0.3, 0.2])
    q = _probs(0, 5, 3)
    np.testing.assert_allclose(adjust_posteriors(q, t, t), q)


def test_empty_batch_and_bad_input() -> None:
    res = adapt_prior(np.zeros((0, 3)))
    assert res.iterations == 0 and res.probs.shape == (0, 3)
    np.testing.assert_allclose(res.prior, 1 / 3)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        adapt_prior(np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        adapt_prior(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="train_prior"):
        adapt_prior(np.full((2, 2), 0.5), np.array([1.0, 0.0]))


def test_temper_keeps_the_argmax_and_fit_temperature_recovers_a_known_one() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(4000, 5))
    y = np.array([rng.choice(5, p=np.exp(r) / np.exp(r).sum()) for r in logits])  # calibrated at T = 1
    soft = np.exp(logits / 2.5)
    soft /= soft.sum(1, keepdims=True)  # the same classifier, under-confident (its logits divided by 2.5)
    np.testing.assert_array_equal(temper(soft, 0.3).argmax(1), soft.argmax(1))
    np.testing.assert_allclose(temper(soft, 1 / 2.5), np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                               atol=1e-9)
    assert fit_temperature(soft, y) == pytest.approx(1 / 2.5, rel=0.08)
    with pytest.raises(ValueError, match="temperature"):
        temper(soft, 0.0)
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(soft, y[:3])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 30), st.integers(2, 6), st.floats(0.05, 1.0))
def test_gated_prior_shares_a_prior_only_with_a_majority_task(seed: int, n: int, k: int, share: float) -> None:
    """Law: the gate passes EM's prior through exactly when its largest share reaches ``min_share``; otherwise the
    adjusted posteriors are the classifier's own (the uniform training prior), so every image keeps its argmax."""
    p = _probs(seed, n, k)
    prior = adapt_prior(p).prior
    gated = gated_prior(prior, share)
    # what the predictor routes by (temper at T = 1 only renormalises)
    np.testing.assert_allclose(batch_prior(p, 1.0, share), gated_prior(adapt_prior(temper(p, 1.0)).prior, share))
    np.testing.assert_array_equal(batch_prior(p, 0.5), adapt_prior(temper(p, 0.5)).prior)
    if prior.max() >= share:
        np.testing.assert_array_equal(gated, prior)
    else:
        np.testing.assert_allclose(gated, np.full(k, 1 / k))
        np.testing.assert_array_equal(adjust_posteriors(p, gated).argmax(1), p.argmax(1))


def test_gate_keeps_a_mixed_batch_per_image_and_a_one_dataset_batch_shared() -> None:
    """A batch of one dataset (most images sure of task 0, one ambiguous between 0 and 1) shares its prior and the
    ambiguous image takes task 0; the same ambiguous image in a batch spread over four tasks keeps its own."""
    ambiguous = [0.45, 0.55, 0.0, 0.0]
    one = np.array([[0.9, 0.1, 0.0, 0.0]] * 6 + [ambiguous])
    mixed = np.array([[0.9, 0.1, 0.0, 0.0], [0.05, 0.9, 0.05, 0.0], [0.0, 0.05, 0.9, 0.05],
                      [0.0, 0.0, 0.1, 0.9], ambiguous])
    for batch, want in ((one, 0), (mixed, 1)):
        prior = gated_prior(adapt_prior(batch).prior, 0.5)
        assert adjust_posteriors(batch, prior).argmax(1)[-1] == want
    with pytest.raises(ValueError, match="min_share"):
        gated_prior(np.array([0.5, 0.5]), 0.0)
