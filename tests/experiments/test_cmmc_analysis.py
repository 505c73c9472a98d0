"""CMMC analysis tables on synthetic rows where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.experiments.cmmc_analysis import (
    paired_rows,
    paper_score,
    regression_table,
    routing_table,
    significance_table,
)


def _rows(seed: int = 0, n: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for mod in ("fundus", "xray"):
        for i in range(n):
            ent = rng.uniform(3, 7)
            raw = 0.6 + 0.02 * rng.standard_normal()
            edge = (0.75 if ent > 5 else 0.5) + 0.02 * rng.standard_normal()
            if mod == "xray":
                edge = raw + 0.05 + 0.01 * rng.standard_normal()  # edge always better on X-ray
            rows.append({"modality": mod, "dataset": "d", "case": f"c{i}", "score_raw": raw, "score_edge": edge,
                         "std": rng.uniform(10, 60), "entropy": ent})
    return rows


def test_paired_rows_join_and_score() -> None:
    raw = [{"modality": "m", "dataset": "d", "case": "a", "dice": 0.8, "nsd": 0.6}]
    edge = [{"modality": "m", "dataset": "d", "case": "a", "dice": 0.9, "nsd": 0.7}]
    feats = [{"modality": "m", "dataset": "d", "case": "a", "std": 3.0, "entropy": 5.0}]
    (row,) = paired_rows(raw, edge, feats)
    assert row["score_raw"] == pytest.approx(0.7) and row["score_edge"] == pytest.approx(0.8)
    assert row["entropy"] == 5.0 and paper_score(1, 0) == 0.5
    with pytest.raises(ValueError, match="same images"):
        paired_rows(raw, [], feats)


def test_tables_find_the_planted_effects() -> None:
    rows = _rows()
    sig = {r["modality"]: r for r in significance_table(rows)}
    assert sig["xray"]["stars"] == "***" and sig["xray"]["edge_minus_raw"] == pytest.approx(5.0, abs=1.0)
    reg = {r["modality"]: r for r in regression_table(rows)}
    assert reg["fundus"]["coef_entropy"] > 0 and reg["fundus"]["stars_entropy"] == "***"
    assert reg["fundus"]["stars_std"] == ""
    table, agg = routing_table(rows, n_boot=500)
    t = {r["modality"]: r for r in table}
    assert t["fundus"]["routed"] > max(t["fundus"]["raw"], t["fundus"]["edge"])  # routing helps where it should
    assert t["xray"]["routed_minus_best"] == pytest.approx(0.0, abs=0.5)  # and costs ~nothing elsewhere
    assert agg["gain_ci_low"] <= agg["gain_vs_best_single"] <= agg["gain_ci_high"]
    assert agg["gain_vs_best_single"] > 0
    hold, _ = routing_table(rows, protocol="holdout", router="tree", n_boot=200)
    assert all(r["held_out"] == 8 for r in hold)
