"""The light models against LiteMedSAM on the CPU at 256², side by side in one run: the distilled CMMC student
(``lite_medsam_student``) and ESP-MedSAM (``esp_medsam``: the same encoder with parameter bags, SPPG, QDMD and the
task classifier; random weights — speed does not depend on them).

1. Image encoders alone, in one process, calls interleaved (LiteMedSAM, student, ESP-MedSAM, …) so that all see the
   same machine load: median latency at batch 1 and the speed-up (CMMC target: ≥ 2×). ESP-MedSAM's encoder runs
   with a parameter bag.
2. Whole models (prompt-free: the image-region box for the SAMs; ESP-MedSAM needs none and picks its task), each
   in its own child process so the peak RSS belongs to that model: params, GFLOPs, latency (batch 1 median and
   p90), images/s at batch 8 (ESP-MedSAM target: ≥ 2× LiteMedSAM end to end).

    python benchmarks/bench_light_models.py [--repeats 20] [--threads 2] [--out benchmarks/results]
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

MODELS = ("lite_medsam", "lite_medsam_student", "esp_medsam")


def _encoder(name: str, size: int) -> torch.nn.Module:
    model = build_model(name, img_size=size)
    if getattr(model, "tasks", None) is None:
        return model.image_encoder.eval()
    enc = model.image_encoder.eval()

    class WithBag(torch.nn.Module):  # the encoder as prediction runs it: with the sample's parameter bag
        def __init__(self) -> None:
            super().__init__()
            self.enc = enc

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.enc(x, torch.zeros(x.shape[0], dtype=torch.int64))

    return WithBag().eval()


def encoder_rows(size: int, repeats: int, batch: int) -> list[dict[str, object]]:
    torch.manual_seed(0)
    encoders = {name: _encoder(name, size) for name in MODELS}
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
    emit(f"Light models vs LiteMedSAM end to end at {args.size}² CPU", rows, args.out)


if __name__ == "__main__":
    main()
