import numpy as np
import pytest

from medseg.metrics import METRIC_NAMES, MetricConfig, SegmentationMetric, compute_label_metrics, compute_metrics


def test_compute_metrics_keys_and_leaderboard_rule():
    gt = np.zeros((20, 20), bool)
    gt[2:12, 2:12] = True
    pred = np.zeros_like(gt)
    pred[10:14, 10:14] = True  # poor overlap: Dice ≤ 0.2
    row = compute_metrics(pred, gt)
    assert set(row) == set(METRIC_NAMES)
    assert row["dice"] <= 0.2 and row["nsd"] > 0
    assert compute_metrics(pred, gt, config=MetricConfig(leaderboard=True))["nsd"] == 0.0


def test_label_metrics_average_over_labels():
    gt = np.zeros((10, 10), np.uint16)
    gt[1:4, 1:4] = 1
    gt[6:9, 6:9] = 3
    pred = gt.copy()
    pred[6:9, 6:9] = 0
    row = compute_label_metrics(pred, gt)
    assert row["n_labels"] == 2 and row["dice"] == pytest.approx(0.5)
    empty = compute_label_metrics(np.zeros((4, 4), int), np.zeros((4, 4), int))
    assert empty["dice"] == 1.0 and empty["n_labels"] == 0


def test_cumulative_metric_summary():
    m = SegmentationMetric()
    a = np.zeros((8, 8), bool)
    a[2:5, 2:5] = True
    m(a, a, modality="x", case="1")
    m(a, np.zeros_like(a), modality="x", case="2")
    m(a, a, modality="y", case="3")
    rows = m.summary(by=("modality",))
    assert [r["modality"] for r in rows] == ["x", "y", "all"]
    assert rows[0]["dice_mean"] == 0.5 and rows[0]["n"] == 2 and rows[2]["n"] == 3
    assert len(m.rows) == 3
    m.reset()
    assert m.rows == []


def test_label_zero_is_never_scored_as_foreground():
    import pytest

    from medseg.metrics import compute_label_metrics

    gt = np.zeros((8, 8), np.uint8)
    gt[2:5, 2:5] = 1
    with pytest.raises(ValueError, match="background"):
        compute_label_metrics(gt, gt, labels=[0, 1])
    assert compute_label_metrics(gt, gt, labels=[1])["dice"] == 1.0
