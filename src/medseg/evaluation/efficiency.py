"""Efficiency of a model: parameters, FLOPs (``torch.utils.flop_counter``), latency, throughput, peak memory."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medseg.models.adapters import adapter_for


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, inputs: Sequence[torch.Tensor]) -> int:
    """Forward FLOPs (a multiply-add counts 2) of one call, by ``torch.utils.flop_counter``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return int(counter.get_total_flops())


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 / (1024 if sys.platform == "darwin" else 1)


def time_callable(fn: Callable[[], Any], *, repeats: int, warmup: int, sync: Callable[[], None] = lambda: None
                  ) -> list[float]:
    """Wall times (s) of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def benchmark_model(model: nn.Module, *, img_size: int, batch_sizes: Sequence[int] = (1, 8), repeats: int = 10,
                    warmup: int = 2, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """One row per batch size: params, GFLOPs per image, latency median/p90 (ms), images/s, peak memory (MB).

    Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak RSS (an upper bound that
    includes the Python interpreter and libraries).
    """
    device = torch.device(device)
    model = model.eval().to(device)
    params = count_parameters(model)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []
    for b in batch_sizes:
        inputs = adapter_for(model).example_inputs(b, img_size, device)
        flops = count_flops(model, inputs)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            times = time_callable(lambda inputs=inputs: model(*inputs), repeats=repeats, warmup=warmup, sync=sync)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
        med = statistics.median(times)
        rows.append({"batch": b, "params_M": params / 1e6, "gflops_per_image": flops / b / 1e9,
                     "latency_ms_median": med * 1e3, "latency_ms_p90": float(np.percentile(times, 90)) * 1e3,
                     "images_per_s": b / med, "peak_memory_MB": peak,
                     "memory_kind": "cuda allocated" if cuda else "process RSS"})
    return rows
