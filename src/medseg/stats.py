"""Statistics for comparing methods on per-image rows (SciPy): paired tests with significance stars, ordinary
least squares with coefficient p-values, percentile-bootstrap intervals, and the relative measures of the CMMC
paper's Table 2.

Every function takes plain sequences of numbers (one per image) and returns a small dataclass or floats, so the
method reports (CMMC, ESP-MedSAM, MedSASS) and the reference benchmark share one implementation.

Example::

    t = paired_test(score_edge, score_raw)          # same images, same order
    print(t.mean_diff, t.p_t, t.stars, t.p_wilcoxon)
    fit = ols(score_edge - score_raw, {"std": std, "entropy": entropy})
    lo, hi = bootstrap_ci(score_meta - score_best, seed=0)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


def stars(p: float) -> str:
    """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else ``""`` (NaN: ``""``)."""
    if not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of ``a`` and ``b`` over the same n items (``mean_diff`` = mean(a − b)).

    ``t``/``p_t``: Student's paired t-test (two-sided); ``p_wilcoxon``: Wilcoxon signed-rank (two-sided, zero
    differences dropped; 1.0 when every difference is zero); ``stars`` from ``p_t``.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    t: float
    p_t: float
    p_wilcoxon: float

    @property
    def stars(self) -> str:
        return stars(self.p_t)


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``a`` vs ``b`` (equal length ≥ 2, no NaN).

    Raises:
        ValueError: lengths differ, fewer than two pairs, or NaN values.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("a paired test needs at least two pairs")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("paired samples contain NaN")
    d = x - y
    if np.all(d == 0):
        t, p_t, p_w = 0.0, 1.0, 1.0
    else:
        res = _st.ttest_rel(x, y)
        t, p_t = float(res.statistic), float(res.pvalue)
        if not np.isfinite(t):  # constant non-zero difference: the t statistic is infinite
            p_t = 0.0
        p_w = float(_st.wilcoxon(d[d != 0]).pvalue)
    return PairedTest(len(x), float(x.mean()), float(y.mean()), float(d.mean()), t, p_t, p_w)


@dataclass(frozen=True)
class Regression:
    """OLS fit ``y = b0 + Σ b_k x_k``: per coefficient (``"const"`` first) its estimate, standard error, t and
    two-sided p-value; ``r2`` and ``n``."""

    coef: dict[str, float]
    se: dict[str, float]
    t: dict[str, float]
    p: dict[str, float]
    r2: float
    n: int

    def rows(self) -> list[dict[str, object]]:
        """One row per coefficient (name, coef, se, t, p, stars) for a table."""
        return [{"term": k, "coef": self.coef[k], "se": self.se[k], "t": self.t[k], "p": self.p[k],
                 "stars": stars(self.p[k])} for k in self.coef]


def ols(y: Sequence[float], features: Mapping[str, Sequence[float]], *, intercept: bool = True) -> Regression:
    """Ordinary least squares of ``y`` on the named ``features`` (columns of equal length), with the classical
    (homoscedastic) standard errors and t-tests on n − k degrees of freedom.

    Raises:
        ValueError: lengths differ or too few observations for the number of coefficients.
    """
    yv = np.asarray(y, dtype=np.float64)
    names = (["const"] if intercept else []) + list(features)
    cols = ([np.ones_like(yv)] if intercept else []) + [np.asarray(features[k], dtype=np.float64) for k in features]
    if any(c.shape != yv.shape for c in cols):
        raise ValueError("every feature needs one value per observation")
    X = np.stack(cols, axis=1)
    n, k = X.shape
    if n <= k:
        raise ValueError(f"{n} observations cannot fit {k} coefficients")
    beta, *_ = np.linalg.lstsq(X, yv, rcond=None)
    resid = yv - X @ beta
    dof = n - k
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        tval = np.where(se > 0, beta / se, np.nan)
    pval = 2 * _st.t.sf(np.abs(tval), dof)
    ss_tot = float(((yv - yv.mean()) ** 2).sum()) if intercept else float((yv ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else float("nan")
    as_dict = lambda v: {nm: float(x) for nm, x in zip(names, v, strict=True)}  # noqa: E731
    return Regression(as_dict(beta), as_dict(se), as_dict(tval), as_dict(pval), r2, n)


def bootstrap_ci(values: Sequence[float], *, statistic: Callable[[np.ndarray], float] = np.mean,
                 n_boot: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (resampled with replacement, seeded).

    For a paired gain pass the per-item differences (``a - b``): resampling items keeps the pairs together.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("bootstrap needs a non-empty 1-D sample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_boot, len(v)))
    boots = np.apply_along_axis(statistic, 1, v[idx]) if statistic is not np.mean else v[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def stratified_bootstrap_ci(groups: Sequence[Sequence[float]], *, n_boot: int = 10_000, level: float = 0.95,
                            seed: int = 0, weights: Sequence[float] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the **mean of group means** (e.g. a score averaged per modality, then over
    modalities): each group is resampled within itself, so every replicate keeps the groups' sizes and weights.
    ``weights`` (one per group, summing to 1): a weighted mean of group means instead (e.g. datasets weighted so
    that every modality counts once)."""
    arrays = [np.asarray(g, dtype=np.float64) for g in groups]
    if not arrays or any(a.ndim != 1 or len(a) == 0 for a in arrays):
        raise ValueError("every group needs a non-empty 1-D sample")
    w = np.full(len(arrays), 1.0 / len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),):
        raise ValueError(f"weights: {len(w)} given for {len(arrays)} groups")
    rng = np.random.default_rng(seed)
    means = np.stack([a[rng.integers(0, len(a), size=(n_boot, len(a)))].mean(axis=1) for a in arrays])
    boots = means.mean(axis=0) if weights is None else w @ means
    alpha = (1.0 - level) / 2
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def relative_change(new: float, old: float) -> float:
    """(new − old) / old — the paper's "relative Δ" (+19.30 % of the router over raw)."""
    return (new - old) / old if old else float("nan")


def relative_error_reduction(new: float, old: float, best: float = 1.0) -> float:
    """Share of the remaining error removed: (new − old) / (best − old), scores in [0, best]."""
    return (new - old) / (best - old) if best != old else float("nan")
