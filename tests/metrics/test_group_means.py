"""``group_means``: the one per-group aggregation of per-image score rows, against plain numpy."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.metrics import group_means

ROWS = [{"modality": "a", "dataset": "x", "dice": "0.2"}, {"modality": "a", "dataset": "x", "dice": "0.4"},
        {"modality": "a", "dataset": "y", "dice": "1.0"}, {"modality": "b", "dataset": "z", "dice": "nan"},
        {"modality": "b", "dataset": "z", "dice": ""}, {"modality": "b", "dataset": "w", "dice": 0.5}]


def test_per_group_per_subgroup_and_other_aggregates() -> None:
    assert group_means(ROWS, "modality") == {"a": np.mean([0.2, 0.4, 1.0]), "b": 0.5}
    assert group_means(ROWS, "modality", within="dataset") == {"a": np.mean([0.3, 1.0]), "b": 0.5}
    per = group_means(ROWS, ("modality", "dataset"))
    assert list(per) == [("a", "x"), ("a", "y"), ("b", "w"), ("b", "z")] and np.isnan(per[("b", "z")])
    assert group_means(ROWS, "modality", agg=np.median)["a"] == 0.4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("pq"), st.sampled_from("uv"), st.floats(0, 1)), min_size=1, max_size=30))
def test_equal_sized_subgroups_weigh_like_images(data) -> None:
    """With every sub-group the same size, the mean of sub-group means is the mean over images."""
    rows = [{"g": g, "s": s, "dice": x} for g, s, x in data]
    rows = [dict(r, s=s) for r in rows for s in ("k", "l")]  # each value twice: sub-groups k and l equal in size
    plain, nested = group_means(rows, "g"), group_means(rows, "g", within="s")
    assert plain.keys() == nested.keys()
    for k in plain:
        assert np.isclose(plain[k], nested[k])
