"""Batch routing under label shift: re-estimate the task prior of a batch of images and adjust the classifier's
posteriors to it (Saerens, Latinne & Decaestecker, "Adjusting the outputs of a classifier to new a priori
probabilities: a simple procedure", Neural Computation 14, 2002).

The universal model's task classifier is fitted class-balanced, so its posteriors assume every task equally likely.
A folder a person segments usually holds one dataset: one or a few tasks. EM finds the task prior ``π`` of the batch
that maximises the likelihood of its images,

    L(π) = Σ_i log Σ_k π_k · p(k | x_i) / p_train(k),

and the adjusted posteriors ``q_ik ∝ p(k | x_i) · π_k / p_train(k)``. An image the classifier finds ambiguous between
a task present in the batch and one absent from it is then pulled towards the present one, while confident images
of a task, however few, keep it (a task's prior never reaches 0 in finitely many steps, and a near-certain posterior
outweighs a small prior).

EM needs calibrated posteriors (Alexandari et al., "Maximum likelihood with bias-corrected calibration is
hard-to-beat at label shift adaptation", ICML 2020). A classifier fitted with label smoothing is under-confident, and
EM then lets a batch's dominant task outvote images of other tasks; :func:`fit_temperature` fits the temperature
``T`` of :func:`temper` (``p_T ∝ p^(1/T)``, the softmax of the logits over ``T``) by negative log-likelihood, and
``adapt_prior(temper(p, T))`` is the calibrated EM. The universal recipe fits ``T`` on images of datasets the
classifier never saw (``benchmarks/batch_routing.py``), the case routing must get right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelShiftResult:
    """EM's outcome for one batch.

    Attributes:
        probs: (N, K) float64, the adjusted posteriors (rows sum to 1).
        prior: (K,) float64, the estimated task prior of the batch (sums to 1).
        iterations: EM steps taken.
        converged: the prior moved by less than ``tol`` (max-abs) in the last step.
    """

    probs: np.ndarray
    prior: np.ndarray
    iterations: int
    converged: bool


def adjust_posteriors(probs: np.ndarray, prior: np.ndarray, train_prior: np.ndarray | None = None) -> np.ndarray:
    """Posteriors under a new task prior: ``q_ik ∝ p_ik · prior_k / train_prior_k``.

    Shape:
        probs: (N, K) posteriors under ``train_prior``; prior, train_prior: (K,) (``None``: uniform). Returns (N, K)
        float64 with rows summing to 1 (a row whose every weighted entry is 0 keeps its input row).
    """
    p = _check_probs(probs)
    return _adjust(p, np.asarray(prior, dtype=np.float64) / _train_prior(train_prior, p.shape[1]))


def _adjust(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``p`` (checked) re-weighted by ``w = prior / train_prior`` and renormalised per row."""
    q = p * w
    s = q.sum(axis=1, keepdims=True)
    return np.where(s > 0, q / np.where(s > 0, s, 1.0), p)


def adapt_prior(probs: np.ndarray, train_prior: np.ndarray | None = None, *, max_iter: int = 200,
                tol: float = 1e-6) -> LabelShiftResult:
    """EM estimate of a batch's task prior and the posteriors adjusted to it (see the module docstring).

    Args:
        probs: (N, K) the classifier's posteriors of the batch's images (softmax output; rows sum to 1).
        train_prior: (K,) the prior the classifier's posteriors assume (``None``: uniform, as for a class-balanced
            fit).
        max_iter: EM steps at most.
        tol: stop once no prior entry moves by more than this.

    Returns:
        :class:`LabelShiftResult`. An empty batch returns ``train_prior`` and no steps. Each step does not decrease
        ``L(π)`` (EM); the order of the images does not matter.
    """
    p = _check_probs(probs)
    base = _train_prior(train_prior, p.shape[1])
    prior = base.copy()
    if p.shape[0] == 0:
        return LabelShiftResult(p.copy(), prior, 0, True)
    for step in range(1, max_iter + 1):
        new = _adjust(p, prior / base).mean(axis=0)
        moved = float(np.abs(new - prior).max())
        prior = new
        if moved < tol:
            return LabelShiftResult(_adjust(p, prior / base), prior, step, True)
    return LabelShiftResult(_adjust(p, prior / base), prior, max_iter, False)


def gated_prior(prior: np.ndarray, min_share: float = 0.5, train_prior: np.ndarray | None = None) -> np.ndarray:
    """A batch's EM ``prior`` if one task holds at least ``min_share`` of it (the batch looks like one dataset, or
    mostly one), else ``train_prior`` (``None``: uniform), under which the adjusted posteriors are the classifier's
    own: the gate of ``auto`` routing, which shares a prior only within such a batch, so that in a folder mixing many
    datasets no image is pulled towards another dataset's task.

    Shape:
        prior, train_prior: (K,); returns (K,) float64.
    """
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must be in (0, 1], got {min_share}")
    p = np.asarray(prior, dtype=np.float64)
    return p.copy() if p.size and float(p.max()) >= min_share else _train_prior(train_prior, p.shape[0])


def batch_prior(probs: np.ndarray, temperature: float = 1.0, min_share: float | None = None) -> np.ndarray:
    """The task prior batch routing routes by: EM's (:func:`adapt_prior`) on the posteriors tempered by
    ``temperature`` (:func:`temper`), and with ``min_share`` passed through :func:`gated_prior` (``auto`` routing).
    Each image's route is then ``adjust_posteriors(temper(probs, temperature), prior).argmax(1)``.

    Shape:
        probs: (N, K) posteriors; returns (K,) float64.
    """
    prior = adapt_prior(temper(probs, temperature)).prior
    return prior if min_share is None else gated_prior(prior, min_share)


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Posteriors at a temperature: ``p_T ∝ p^(1/T)`` (= the softmax of the logits divided by ``T``; argmax
    unchanged; ``T < 1`` sharpens).

    Shape:
        probs: (N, K); returns (N, K) float64, rows summing to 1.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logp = np.log(np.maximum(_check_probs(probs), 1e-300)) / temperature
    logp -= logp.max(axis=1, keepdims=True) if logp.size else 0.0
    e = np.exp(logp)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.02, 20.0)) -> float:
    """The temperature minimising the mean negative log-likelihood of ``labels`` under :func:`temper`
    (one-dimensional bounded search over ``log T``; the NLL is convex in ``1/T``).

    Shape:
        probs: (N, K) posteriors; labels: (N,) int class indices.
    """
    from scipy.optimize import minimize_scalar

    p = _check_probs(probs)
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (p.shape[0],) or p.shape[0] == 0:
        raise ValueError(f"labels must be ({p.shape[0]},) and non-empty, got shape {y.shape}")
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-np.log(np.maximum(temper(p, float(np.exp(log_t)))[rows, y], 1e-300)).mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def batch_log_likelihood(probs: np.ndarray, prior: np.ndarray, train_prior: np.ndarray | None = None) -> float:
    """``L(π)`` of the module docstring (up to a constant in ``π``): Σ_i log Σ_k π_k p_ik / p_train(k)."""
    p = _check_probs(probs)
    w = np.asarray(prior, dtype=np.float64) / _train_prior(train_prior, p.shape[1])
    return float(np.log(np.maximum((p * w).sum(axis=1), 1e-300)).sum())


def _check_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K), got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    return p


def _train_prior(train_prior: np.ndarray | None, k: int) -> np.ndarray:
    if train_prior is None:
        return np.full(k, 1.0 / k)
    t = np.asarray(train_prior, dtype=np.float64)
    if t.shape != (k,) or (t <= 0).any():
        raise ValueError(f"train_prior must be ({k},) and positive, got {t}")
    return t / t.sum()
