"""Every registered model at 256² on the CPU: params, GFLOPs, inference latency (batch 1 and 8) and training
throughput (forward + backward + AdamW step, batch 8, images/s), side by side in one run. Inference and training
of each model run in their own child process, so each peak-RSS figure belongs to that model and stage alone.

    python benchmarks/bench_models.py [--repeats 3] [--threads 2] [--train-batch 8] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import inspect
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from _common import emit
from medseg.evaluation.efficiency import benchmark_model, peak_rss_mb
from medseg.losses import CompositeLoss
from medseg.models import build_model, list_models, sized_options
from medseg.models.adapters import adapter_for


def train_throughput(model: torch.nn.Module, batch: int, size: int, repeats: int) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = CompositeLoss({"dice": 1.0, "bce": 1.0})
    inputs = adapter_for(model).example_inputs(batch, size)
    target = (torch.rand(batch, 1, size, size) > 0.5).float()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(*inputs)
        loss, _ = loss_fn(logits, target)
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def _measure(stage: str, name: str, size: int, repeats: int, train_batch: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name, **sized_options(name, size))
    if stage == "inference":
        inf = benchmark_model(model, img_size=size, batch_sizes=(1, 8), repeats=repeats, warmup=1)
        queue.put({"params_M": inf[0]["params_M"], "gflops_per_image": inf[0]["gflops_per_image"],
                   "latency_ms_b1": inf[0]["latency_ms_median"], "latency_ms_p90_b1": inf[0]["latency_ms_p90"],
                   "images_per_s_b8": inf[1]["images_per_s"], "peak_rss_MB_inference": peak_rss_mb()})
    else:
        queue.put({"train_images_per_s": train_throughput(model, train_batch, size, repeats),
                   "peak_rss_MB_training": peak_rss_mb()})


def _in_child(*args: object) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def builder_required(builder: Callable[..., torch.nn.Module]) -> list[str]:
    """The options ``builder`` cannot do without (no default)."""
    return [p.name for p in inspect.signature(builder).parameters.values() if p.default is inspect.Parameter.empty]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for entry in list_models():
        if args.models and entry.name not in args.models:
            continue
        if builder_required(entry.builder):  # a combination of other models (ensemble): no size of its own
            print(f"{entry.name}: skipped, its builder needs {', '.join(builder_required(entry.builder))}")
            continue
        common = (entry.name, args.size, args.repeats, args.train_batch, args.threads)
        rows.append({"model": entry.name, **_in_child("inference", *common), **_in_child("training", *common)})
        print(rows[-1], flush=True)
    emit(f"Models at {args.size}² CPU", rows, args.out)


if __name__ == "__main__":
    main()
