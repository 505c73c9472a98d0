"""Efficiency measurement: FLOPs against a hand count, rows of ``benchmark_model``."""

from __future__ import annotations

import torch
from torch import nn

from medseg.evaluation.efficiency import benchmark_model, count_flops, count_parameters


def test_flops_of_a_convolution_hand_count() -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert count_flops(conv, (torch.rand(1, 3, 8, 8),)) == 2 * 4 * 8 * 8 * 3 * 9
    assert count_parameters(conv) == 4 * 3 * 9


def test_benchmark_rows() -> None:
    rows = benchmark_model(nn.Conv2d(3, 1, 1), img_size=16, batch_sizes=(1, 4), repeats=3, warmup=1)
    assert [r["batch"] for r in rows] == [1, 4]
    r = rows[1]
    assert r["gflops_per_image"] == 2 * 3 * 16 * 16 / 1e9
    assert r["latency_ms_p90"] >= r["latency_ms_median"] > 0 and r["images_per_s"] > 0 and r["peak_memory_MB"] > 0
