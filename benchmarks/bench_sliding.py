"""Sliding-window inference overhead: one 1024² image through ``medseg.inference.sliding`` vs 16 separate 256²
forward passes of the same ResNet U-Net, side by side in one process; and peak memory on a 4096² image.

    python benchmarks/bench_sliding.py [--repeats 3] [--threads 2] [--out benchmarks/results]

The 16 passes are the work an overlap-0 tiling must do at least; the ratio measures what windowing, batching and
Gaussian blending add. With overlap 0.25 the windows themselves are 25 instead of 16 (stride 192).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
from pathlib import Path

import torch

from _common import emit, run_times, spread
from medseg.evaluation.efficiency import peak_rss_mb
from medseg.inference.sliding import sliding_window_logits
from medseg.models import build_model, sized_options
from medseg.models.adapters import adapter_for

MODEL = "resnet_unet"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(MODEL, **sized_options(MODEL, 256)).eval()


def _big_image_rss(size: int, threads: int, queue) -> None:
    torch.set_num_threads(threads)
    fn = adapter_for(_model()).window_logits()
    before = peak_rss_mb()
    with torch.inference_mode():
        out = sliding_window_logits(fn, torch.rand(1, 3, size, size), tile=256, overlap=0.25, batch_size=8)
    queue.put({"size": size, "peak_rss_MB": peak_rss_mb(), "rss_before_MB": before, "shape": tuple(out.shape)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--big", type=int, default=4096, help="side of the memory test image")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = _model()
    fn = adapter_for(model).window_logits()
    tiles = torch.rand(16, 3, 256, 256)
    image = torch.rand(1, 3, 1024, 1024)

    def sixteen() -> None:
        for i in range(16):
            model(tiles[i:i + 1])

    methods = {
        "16 × 256² forward passes (batch 1)": sixteen,
        "16 × 256² forward passes (batch 8)": lambda: [model(tiles[i:i + 8]) for i in (0, 8)],
        "sliding 1024², overlap 0, batch 1": lambda: sliding_window_logits(fn, image, tile=256, overlap=0.0,
                                                                            batch_size=1),
        "sliding 1024², overlap 0, batch 8": lambda: sliding_window_logits(fn, image, tile=256, overlap=0.0),
        "sliding 1024², overlap 0.25, batch 1": lambda: sliding_window_logits(fn, image, tile=256, overlap=0.25,
                                                                               batch_size=1),
        "sliding 1024², overlap 0.25, batch 8": lambda: sliding_window_logits(fn, image, tile=256, overlap=0.25),
    }
    times = {}
    with torch.inference_mode():
        for name, f in methods.items():
            times[name] = run_times(f, args.repeats, warmup=1)[0]
    base = statistics.median(times["16 × 256² forward passes (batch 1)"])
    rows = [{"method": k, "median_ms": 1e3 * statistics.median(v), "min_max_ms": spread([1e3 * t for t in v]),
             "time_vs_16_passes": statistics.median(v) / base} for k, v in times.items()]
    emit(f"Sliding window {MODEL} 1024x1024 CPU", rows, args.out)
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_big_image_rss, args=(args.big, args.threads, queue))
    proc.start()
    res = queue.get()
    proc.join()
    print(f"{args.big}² image, overlap 0.25, batch 8: output {res['shape']}, peak RSS {res['peak_rss_MB']:.0f} MB "
          f"(model loaded: {res['rss_before_MB']:.0f} MB; the float32 input alone is "
          f"{3 * args.big ** 2 * 4 / 2 ** 20:.0f} MB)")


if __name__ == "__main__":
    main()
