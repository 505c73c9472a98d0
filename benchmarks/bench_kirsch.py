"""Kirsch edge enhancement: medseg (torch, NumPy) vs OpenCV ``filter2D`` × 8 vs ``scipy.ndimage.convolve`` × 8
(the CMMC approach). All four produce the same uint8 images (asserted) — replicate padding, per-channel,
per-image min-max normalisation.

    python benchmarks/bench_kirsch.py [--repeats 5] [--rounds 5] [--threads 2] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi

from _common import emit, median_time, spread
from medseg.ops import edge_filter_numpy, edge_filter_torch, kirsch_kernels

KERNELS = kirsch_kernels()


def _normalise(resp: np.ndarray) -> np.ndarray:
    """Per-image min-max to uint8 with exact integer floor (same rule as medseg)."""
    r = resp.astype(np.int64)
    lo, hi = r.min(), r.max()
    return ((r - lo) * 255 // max(hi - lo, 1)).astype(np.uint8)


def opencv_kirsch(img: np.ndarray) -> np.ndarray:
    """Eight ``cv2.filter2D`` calls (uint8 → int16, exact), max, normalise."""
    resp = None
    for k in KERNELS:
        r = cv2.filter2D(img, cv2.CV_16S, k.astype(np.float32), borderType=cv2.BORDER_REPLICATE)
        resp = r if resp is None else np.maximum(resp, r)
    return _normalise(resp)


def scipy_kirsch(img: np.ndarray) -> np.ndarray:
    """CMMC approach: ``scipy.ndimage.convolve`` per kernel and channel (float), max, normalise."""
    x = img.astype(np.float64)
    resp = np.zeros_like(x)
    for c in range(x.shape[-1]):
        for k in KERNELS:
            # convolve flips the kernel; the set of 8 is closed under 180° rotation, so the max is the same
            resp[..., c] = np.maximum(resp[..., c], ndi.convolve(x[..., c], k, mode="nearest"))
    return _normalise(resp)


def run(n: int, size: int, repeats: int, out: Path | None, rounds: int = 5) -> list[dict]:
    """Time every method in ``rounds`` rounds (median of ``repeats`` calls each); the table gives the median over
    rounds and the min–max of the per-round ratio to OpenCV."""
    rng = np.random.default_rng(0)
    # smooth-ish random images (real images are not white noise; values still use the full range)
    base = rng.integers(0, 256, (n, size // 8, size // 8, 3), dtype=np.uint8)
    imgs = np.ascontiguousarray(np.repeat(np.repeat(base, 8, axis=1), 8, axis=2))
    imgs = np.clip(imgs.astype(np.int16) + rng.integers(-20, 21, imgs.shape), 0, 255).astype(np.uint8)
    batch = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()

    methods = {
        "medseg torch (batched)": lambda: edge_filter_torch(batch, "kirsch").permute(0, 2, 3, 1).numpy(),
        "medseg numpy": lambda: np.stack([edge_filter_numpy(i, "kirsch") for i in imgs]),
        "opencv filter2D x8": lambda: np.stack([opencv_kirsch(i) for i in imgs]),
        "scipy convolve x8 (CMMC)": lambda: np.stack([scipy_kirsch(i) for i in imgs]),
    }
    base_name, scipy_name = "opencv filter2D x8", "scipy convolve x8 (CMMC)"
    per_round: dict[str, list[float]] = {k: [] for k in methods}
    outputs = {}
    names = list(methods)
    for r in range(rounds):  # rounds rotate the order, so drift on a busy machine hits every method alike
        for name in names[r % len(names):] + names[:r % len(names)]:
            reps = max(1, repeats // 2) if "scipy" in name else repeats
            per_round[name].append(median_time(methods[name], reps)[0])
            outputs[name] = methods[name]()
    ref = outputs[scipy_name]
    for name, o in outputs.items():
        np.testing.assert_array_equal(o, ref, err_msg=f"{name} differs from the SciPy reference")
    rows = []
    for name, ts in per_round.items():
        ratio = [b / t for b, t in zip(per_round[base_name], ts, strict=True)]
        rows.append({"method": name, "median_ms": 1e3 * statistics.median(ts),
                     "ms_per_image": 1e3 * statistics.median(ts) / n, "speed_vs_opencv": statistics.median(ratio),
                     "speed_vs_opencv_min_max": spread(ratio),
                     "speed_vs_scipy": statistics.median(per_round[scipy_name]) / statistics.median(ts)})
    emit(f"Kirsch {n} RGB {size}x{size}", rows, out)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5, help="independent rounds (spread of the ratio)")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads (CI machine: 2 cores)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    print(f"torch {torch.__version__}, OpenCV {cv2.__version__}, threads {args.threads}; outputs asserted equal\n")
    run(64, 256, args.repeats, args.out, args.rounds)
    run(8, 1024, args.repeats, args.out, args.rounds)


if __name__ == "__main__":
    main()
