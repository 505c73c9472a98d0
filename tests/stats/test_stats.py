"""medseg.stats against SciPy's own routines and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from medseg.stats import bootstrap_ci, ols, paired_test, relative_change, relative_error_reduction, stars


def test_paired_test_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(30)
    b = a - 0.05 + 0.02 * rng.standard_normal(30)
    t = paired_test(a, b)
    ref = sst.ttest_rel(a, b)
    assert t.t == pytest.approx(ref.statistic) and t.p_t == pytest.approx(ref.pvalue)
    assert t.p_wilcoxon == pytest.approx(sst.wilcoxon(a - b).pvalue)
    assert t.mean_diff == pytest.approx(float(np.mean(a - b))) and t.stars == "***"


def test_identical_samples_are_not_different() -> None:
    t = paired_test([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert (t.p_t, t.p_wilcoxon, t.stars) == (1.0, 1.0, "")
    with pytest.raises(ValueError, match="equal"):
        paired_test([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        paired_test([1, np.nan], [1, 2])


def test_ols_matches_linregress_and_recovers_a_known_plane() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(40)
    y = 2.0 + 3.0 * x + 0.1 * rng.standard_normal(40)
    fit = ols(y, {"x": x})
    ref = sst.linregress(x, y)
    assert fit.coef["x"] == pytest.approx(ref.slope) and fit.coef["const"] == pytest.approx(ref.intercept)
    assert fit.se["x"] == pytest.approx(ref.stderr) and fit.p["x"] == pytest.approx(ref.pvalue)
    assert fit.r2 == pytest.approx(ref.rvalue ** 2)
    z = rng.random(40)
    exact = ols(1.0 - 2.0 * x + 0.5 * z, {"x": x, "z": z})
    assert exact.coef == pytest.approx({"const": 1.0, "x": -2.0, "z": 0.5}, abs=1e-9)
    assert [r["term"] for r in exact.rows()] == ["const", "x", "z"]
    with pytest.raises(ValueError, match="cannot fit"):
        ols([1.0, 2.0], {"x": [1.0, 2.0]})


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=2, max_size=40), st.integers(0, 1000))
def test_bootstrap_interval_contains_the_mean_and_is_seeded(values: list[float], seed: int) -> None:
    lo, hi = bootstrap_ci(values, n_boot=500, seed=seed)
    assert lo <= float(np.mean(values)) + 1e-12 and float(np.mean(values)) - 1e-12 <= hi
    assert (lo, hi) == bootstrap_ci(values, n_boot=500, seed=seed)


def test_relative_measures_and_stars() -> None:
    assert relative_change(0.3530, 0.2959) == pytest.approx(0.193, abs=1e-3)  # the paper's +19.30 %
    assert relative_error_reduction(0.8, 0.6) == pytest.approx(0.5)
    assert [stars(p) for p in (0.0005, 0.005, 0.03, 0.2, float("nan"))] == ["***", "**", "*", "", ""]


def test_stratified_bootstrap_keeps_group_weights() -> None:
    from medseg.stats import stratified_bootstrap_ci

    big = np.full(100, 1.0)
    small = np.array([0.0, 0.0])
    lo, hi = stratified_bootstrap_ci([big, small], n_boot=200)
    assert lo == hi == 0.5  # constant groups: the mean of group means, not the pooled mean (≈0.98)
    lo, hi = stratified_bootstrap_ci([np.arange(10.0), np.arange(5.0)], n_boot=500, seed=3)
    assert lo < (4.5 + 2.0) / 2 < hi


def test_stratified_bootstrap_weights_groups() -> None:
    """``weights``: a weighted mean of group means; equal weights give the unweighted interval."""
    from medseg.stats import stratified_bootstrap_ci

    lo, hi = stratified_bootstrap_ci([np.full(10, 1.0), np.zeros(3)], n_boot=100, weights=[0.25, 0.75])
    assert lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    groups = [np.arange(10.0), np.arange(5.0), np.ones(4)]
    assert np.allclose(stratified_bootstrap_ci(groups, n_boot=300, seed=1, weights=[1 / 3] * 3),
                       stratified_bootstrap_ci(groups, n_boot=300, seed=1))
    with pytest.raises(ValueError, match="weights"):
        stratified_bootstrap_ci(groups, weights=[0.5, 0.5])
