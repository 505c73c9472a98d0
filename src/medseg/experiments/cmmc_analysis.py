"""The CMMC paper's analysis on per-image rows of the raw- and edge-pretrained models: significance per modality
(its Fig. 2), regression of the score difference on the meta-features (Table 1), and the router comparison
(Table 2) with cross-validated routing and bootstrap intervals.

Input rows (one per test image, see :func:`paired_rows`): ``modality``, ``dataset``, ``case``, ``score_raw``,
``score_edge`` (the paper's score: mean of Dice and NSD at τ = 2 px) and the meta-features (``std``, ``entropy``,
…). Scores are in [0, 1]; tables report them ×100 like the paper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medseg.routing import FITTERS, cross_validate, holdout
from medseg.stats import ols, paired_test, relative_change, relative_error_reduction, stars, stratified_bootstrap_ci

KEY = ("modality", "dataset", "case")


def paper_score(dice: float, nsd: float) -> float:
    """The paper's per-image score: the mean of DSC and NSD."""
    return (float(dice) + float(nsd)) / 2


def paired_rows(raw: Iterable[Mapping[str, Any]], edge: Iterable[Mapping[str, Any]],
                features: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Join per-image metric rows of the two models (``dice``, ``nsd``) and the meta-feature rows on
    (modality, dataset, case).

    Raises:
        ValueError: an image scored by one model but not the other, or without meta-features.
    """
    def index(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], Mapping[str, Any]]:
        return {tuple(str(r[k]) for k in KEY): r for r in rows}

    a, b, f = index(raw), index(edge), index(features)
    if set(a) != set(b) or not set(a) <= set(f):
        missing = sorted((set(a) ^ set(b)) | (set(a) - set(f)))[:3]
        raise ValueError(f"raw, edge and meta-feature rows must cover the same images; e.g. {missing}")
    out = []
    for k in sorted(a):
        feats = {n: float(v) for n, v in f[k].items() if n not in KEY}
        out.append({**dict(zip(KEY, k, strict=True)),
                    "score_raw": paper_score(a[k]["dice"], a[k]["nsd"]),
                    "score_edge": paper_score(b[k]["dice"], b[k]["nsd"]), **feats})
    return out


def _by_modality(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r["modality"]), []).append(r)
    return dict(sorted(out.items()))


def _col(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.asarray([float(r[key]) for r in rows], dtype=np.float64)


def significance_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per modality: mean raw / edge scores (×100), their difference, paired t-test (p, stars) and Wilcoxon p."""
    out = []
    for mod, rs in _by_modality(rows).items():
        if len(rs) < 2:
            continue
        t = paired_test(_col(rs, "score_edge"), _col(rs, "score_raw"))
        out.append({"modality": mod, "n": t.n, "raw": 100 * t.mean_b, "edge": 100 * t.mean_a,
                    "edge_minus_raw": 100 * t.mean_diff, "p_t": t.p_t, "stars": t.stars,
                    "p_wilcoxon": t.p_wilcoxon})
    return out


def regression_table(rows: Sequence[Mapping[str, Any]], features: Sequence[str] = ("std", "entropy")
                     ) -> list[dict[str, Any]]:
    """The paper's Table 1: per modality, OLS of (score_edge − score_raw) on each meta-feature (one regression per
    feature, as the paper reports one coefficient per feature), coefficient, p-value and stars."""
    out = []
    for mod, rs in _by_modality(rows).items():
        diff = _col(rs, "score_edge") - _col(rs, "score_raw")
        row: dict[str, Any] = {"modality": mod, "n": len(rs)}
        for name in features:
            x = _col(rs, name)
            if len(rs) < 3 or np.ptp(x) == 0:
                row.update({f"coef_{name}": float("nan"), f"p_{name}": float("nan"), f"stars_{name}": ""})
                continue
            fit = ols(diff, {name: x})
            row.update({f"coef_{name}": fit.coef[name], f"p_{name}": fit.p[name], f"stars_{name}": stars(fit.p[name])})
        out.append(row)
    return out


def routing_table(rows: Sequence[Mapping[str, Any]], *, router: str = "threshold",
                  features: Sequence[str] = ("std", "entropy"), protocol: str = "cv", folds: int = 5,
                  seed: int = 0, n_boot: int = 10_000) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The paper's Table 2 per modality — raw, edge, Δ, relative Δ, routed (held-out), routed − best single,
    relative error reduction, oracle — for ``router`` (``threshold`` | ``logistic`` | ``tree``) evaluated by
    ``protocol`` (``cv``: ``folds``-fold cross-validation; ``holdout``: the paper's seeded 80/20), plus the
    aggregate over modalities (mean of modality means) with a stratified bootstrap interval of the routed gain over
    the best single model.

    Returns:
        (table rows, aggregate dict).
    """
    fitter = FITTERS[router]
    table, gains, routed_all, raw_all, edge_all = [], [], [], [], []
    for mod, rs in _by_modality(rows).items():
        if len(rs) < 2:
            continue
        raw, edge = _col(rs, "score_raw"), _col(rs, "score_edge")
        feats = {n: _col(rs, n) for n in features}
        ev = (cross_validate(feats, raw, edge, fitter, k=folds, seed=seed) if protocol == "cv"
              else holdout(feats, raw, edge, fitter, seed=seed))
        table.append({
            "modality": mod, "n": len(rs), "held_out": ev.n, "raw": 100 * raw.mean(), "edge": 100 * edge.mean(),
            "delta": 100 * (edge.mean() - raw.mean()), "relative_delta": relative_change(edge.mean(), raw.mean()),
            "routed": 100 * ev.routed, "best_single": 100 * ev.best_single,
            "routed_minus_best": 100 * (ev.routed - ev.best_single),
            "relative_error_reduction": relative_error_reduction(ev.routed, ev.best_single),
            "oracle": 100 * ev.oracle})
        gains.append(np.asarray(ev.routed_per_image) - np.asarray(ev.best_single_per_image))
        routed_all.append(ev.routed)
        raw_all.append(ev.always_a)
        edge_all.append(ev.always_b)
    if not table:
        return [], {}
    routed, raw, edge = float(np.mean(routed_all)), float(np.mean(raw_all)), float(np.mean(edge_all))
    lo, hi = stratified_bootstrap_ci(gains, n_boot=n_boot, seed=seed)
    aggregate = {"router": router, "protocol": protocol, "routed": 100 * routed, "raw": 100 * raw,
                 "edge": 100 * edge, "routed_vs_raw": relative_change(routed, raw),
                 "routed_vs_edge": relative_change(routed, edge),
                 "best_single": float(np.mean([r["best_single"] for r in table])),
                 "gain_vs_best_single": 100 * float(np.mean([g.mean() for g in gains])),
                 "gain_ci_low": 100 * lo, "gain_ci_high": 100 * hi}
    return table, aggregate
