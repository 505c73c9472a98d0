"""The distilled CMMC / ESP-MedSAM student against LiteMedSAM on the CPU at 256², side by side in one run.

1. Image encoders alone, in one process, calls interleaved (teacher, student, teacher, …) so that both see the same
   machine load: median latency at batch 1 and the speed-up (target: ≥ 2×).
2. Whole models (encoder + prompt encoder + mask decoder, prompt-free box), each in its own child process so the
   peak RSS belongs to that model: params, GFLOPs, latency (batch 1 median and p90), images/s at batch 8.

    python benchmarks/bench_cmmc_student.py [--repeats 20] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _common import emit
from bench_models import _in_child
from medseg.evaluation.efficiency import count_flops, count_parameters
from medseg.models import build_model

MODELS = ("lite_medsam", "lite_medsam_student")


def encoder_rows(size: int, repeats: int, batch: int) -> list[dict[str, object]]:
    torch.manual_seed(0)
    encoders = {name: build_model(name, img_size=size).image_encoder.eval() for name in MODELS}
    x = torch.rand(batch, 3, size, size)
    times: dict[str, list[float]] = {name: [] for name in MODELS}
    with torch.inference_mode():
        for enc in encoders.values():  # warm-up
            enc(x)
        for _ in range(repeats):
            for name, enc in encoders.items():
                t0 = time.perf_counter()
                enc(x)
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["lite_medsam"])
    rows = []
    for name, enc in encoders.items():
        med = statistics.median(times[name])
        rows.append({"image_encoder_of": name, "batch": batch, "params_M": count_parameters(enc) / 1e6,
                     "gflops_per_image": count_flops(enc, (x[:1],)) / 1e9, "latency_ms_median": 1000 * med,
                     "latency_ms_min": 1000 * min(times[name]), "latency_ms_max": 1000 * max(times[name]),
                     "speedup_vs_lite_medsam": base / med})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    enc = encoder_rows(args.size, args.repeats, batch=1)
    for r in enc:
        print(r, flush=True)
    emit(f"Image encoders at {args.size}² CPU (interleaved, {args.repeats} repeats)", enc, args.out)
    rows = []
    for name in MODELS:
        rows.append({"model": name, **_in_child("inference", name, args.size, max(3, args.repeats // 4), 8,
                                                args.threads)})
        print(rows[-1], flush=True)
    base = rows[0]["latency_ms_b1"]
    for r in rows:
        r["speedup_vs_lite_medsam_b1"] = base / r["latency_ms_b1"]
    emit(f"CMMC student vs LiteMedSAM end to end at {args.size}² CPU", rows, args.out)


if __name__ == "__main__":
    main()
