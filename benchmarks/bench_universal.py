"""The ``universal`` model against prompt-free LiteMedSAM on the CPU, side by side in one run.

1. Time per image, end to end (uint8 image → binary mask at the image's own size), calls interleaved image by image
   so both see the same machine load: LiteMedSAM with the image-region box, and ``universal`` (classifier + the
   task's engine). Images: the test split of the reference split whose task runs the frozen-encoder head (the
   issue's "tasks that use the frozen encoder"), and separately those whose task runs a specialist. Medians over
   images of the per-image median over repeats; ratio = universal / LiteMedSAM (target ≤ 1.2 on the head tasks).
   A model with a fast mode is timed too, interleaved the same way: ``--fast`` (its head everywhere; target:
   LiteMedSAM / fast ≥ 3) and ``--fast --keep-specialists``.
2. Peak RSS of ``medseg predict MODEL`` over N images (a child process, so the figure is that command's; target
   ≤ 1.5 GB for 200 images), with its wall time: the default routing (``auto``: two passes over the files, the
   embeddings spooled to disk between them), ``--routing image`` (one pass), ``--fast`` and ``--routing batch``.

    python benchmarks/bench_universal.py [--model universal] [--data ../shared/data] [--split SPLIT.csv]
                                         [--per-task 3] [--repeats 3] [--rss-images 200] [--threads 2]
                                         [--skip-timing] [--out benchmarks/results]

Without ``../shared/data`` it uses synthetic phantoms (the timings then say nothing about real tasks).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import emit
from medseg.data import discover, load_samples, read_manifest, stratified_split
from medseg.inference import Predictor
from medseg.inference.universal import UniversalPredictor
from medseg.models import build_model
from medseg.models.io import load_model


def _test_entries(data: Path, split: Path | None) -> list:
    entries = read_manifest(split) if split is not None else stratified_split(
        [e for e in discover(data)[0] if e.mask is not None], test=0.2, val=0.1, seed=0)
    return [e for e in entries if e.split == "test"]


def timing_rows(model: str, entries: list, per_task: int, repeats: int, target_of: dict[str, str]) -> list[dict]:
    loaded = load_model(model)
    predictors = {"lite_medsam_image_box": Predictor(build_model("lite_medsam", pretrained=True), img_size=256),
                  "universal": UniversalPredictor(loaded.model)}
    if loaded.model.student is not None:
        predictors["universal_fast"] = UniversalPredictor(loaded.model, fast=True)
        if "specialist" in loaded.model.engines.values():
            predictors["universal_fast_keep_specialists"] = UniversalPredictor(loaded.model, fast=True,
                                                                               keep_specialists=True)
    engines = loaded.model.engines
    by_task: dict[str, list] = {}
    for e in entries:
        by_task.setdefault(target_of.get(e.dataset, e.dataset), []).append(e)
    picked = {t: es[:per_task] for t, es in sorted(by_task.items()) if t in engines}
    times: dict[tuple[str, str], list[float]] = {}
    images = {t: [load_samples(e.image, None)[0].image for e in es] for t, es in picked.items()}
    for img in next(iter(images.values()))[:1]:  # warm-up every predictor
        for pred in predictors.values():
            pred.predict([img])
    for _ in range(repeats):
        for t, imgs in images.items():
            for i, img in enumerate(imgs):
                for name, pred in predictors.items():
                    t0 = time.perf_counter()
                    pred.predict([img])
                    times.setdefault((name, f"{t}/{i}"), []).append(time.perf_counter() - t0)
    rows = []
    for group in ("head", "specialist", "all"):
        keys = [f"{t}/{i}" for t, imgs in images.items() if group in ("all", engines[t]) for i in range(len(imgs))]
        if not keys:
            continue
        med = {name: statistics.median([statistics.median(times[(name, k)]) for k in keys]) for name in predictors}
        for name, value in med.items():
            rows.append({"tasks": f"{group} tasks ({len(keys)} images)", "model": name,
                         "median_ms_per_image": 1000 * value,
                         "ratio_to_lite_medsam": value / med["lite_medsam_image_box"]})
    return rows


def rss_row(model: str, entries: list, n: int, fast: bool = False, routing: str | None = None) -> dict:
    """Peak RSS and wall time of ``medseg predict MODEL [--fast] [--routing R]`` on ``n`` images (cycled if
    fewer), in a child process (one per call, so each peak is its own)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-universal-"))
    try:
        inputs = tmp / "in"
        inputs.mkdir()
        for i in range(n):
            e = entries[i % len(entries)]
            shutil.copy(e.image, inputs / f"{i:04d}_{Path(e.image).name}")
        cmd = [sys.executable, "-c", "import sys; from medseg.cli.main import main; sys.exit(main(sys.argv[1:]))",
               "predict", model, str(inputs), "-o", str(tmp / "out"), *(["--fast"] if fast else []),
               *(["--routing", routing] if routing else [])]
        probe = [sys.executable, "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)", *cmd]
        t0 = time.perf_counter()
        done = subprocess.run(probe, check=True, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak_kb = int(done.stdout.strip().splitlines()[-1])
        flags = (" --fast" if fast else "") + (f" --routing {routing}" if routing else "")
        return {"command": f"medseg predict {model}{flags} <{n} images>", "images": n,
                "wall_s": wall,
                "s_per_image": wall / n, "peak_rss_mb": peak_kb / 1024}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="universal")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--split", type=Path, default=None, help="a manifest with the test split (default: the "
                                                              "reference split of --data)")
    ap.add_argument("--per-task", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-timing", action="store_true", help="only the peak-RSS part")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta_target = load_model(args.model).meta.get("target_of", {})
    if args.data.is_dir():
        entries = _test_entries(args.data, args.split)
    else:
        from medseg.data import generate_dataset

        entries = _test_entries(generate_dataset(Path(tempfile.mkdtemp()) / "synth", per_modality=6, size=256),
                                None)
    if not args.skip_timing:
        emit("universal vs LiteMedSAM (image-region box), CPU, end to end per image",
             timing_rows(args.model, entries, args.per_task, args.repeats, meta_target), args.out)
    np.random.default_rng(0).shuffle(entries)
    rows = [rss_row(args.model, entries, args.rss_images), rss_row(args.model, entries, args.rss_images,
                                                                   routing="image")]
    if load_model(args.model).model.student is not None:
        rows.append(rss_row(args.model, entries, args.rss_images, fast=True))
    rows.append(rss_row(args.model, entries, args.rss_images, routing="batch"))
    emit(f"medseg predict {args.model}: peak RSS over {args.rss_images} images", rows, args.out)


if __name__ == "__main__":
    main()
