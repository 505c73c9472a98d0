"""What a specialist's recipe costs per image on the CPU: the shipped ``universal`` model's specialist of a target
(for retinal vessels: two U-Nets, the four flips of each image averaged), the same without its flips (``--no-tta``)
and its first member alone at scale 1 without flips (the recipe shipped before the ensemble), timed side by side
(calls interleaved image by image), on the test images of the target's datasets in the reference split; native
resolution, sliding windows, end to end (uint8 image → mask). Medians over images of the per-image median over
repeats; ratio = the row / the first member.

    python benchmarks/bench_specialist.py [--target retinal-vessel] [--repeats 3] [--threads 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from _common import emit, reference_split, run_times
from medseg.data import load_samples
from medseg.inference import Predictor
from medseg.models.ensemble import ensemble_member_folder
from medseg.models.io import load_model
from medseg.weights import shipped_model_folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="retinal-vessel")
    ap.add_argument("--datasets", nargs="*", default=["drive", "chasedb1"], help="the target's datasets")
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shipped = shipped_model_folder("universal") / "specialists" / args.target
    entries = [e for e in reference_split(args.data) if e.split == "test" and e.dataset in args.datasets]
    if not entries:
        raise SystemExit(f"no test images of {', '.join(args.datasets)} under {args.data}")
    images = [s.image for e in entries for s in load_samples(e.image)]
    with tempfile.TemporaryDirectory() as tmp:
        first = ensemble_member_folder(shipped, 0, Path(tmp) / "first")
        models = {"shipped specialist": Predictor.for_model(load_model(shipped)),
                  "shipped specialist without flips (--no-tta)": Predictor.for_model(load_model(shipped), tta=False),
                  "its first member, scale 1": Predictor.for_model(load_model(first), scales=(1.0,), tta=False)}
        per: dict[str, list[float]] = {k: [] for k in models}
        for image in images:
            for name, predictor in models.items():  # interleaved: both see the same machine load
                times, _ = run_times(lambda p=predictor, im=image: p.predict([im]), args.repeats)
                per[name].append(statistics.median(times) * 1000)
    base = statistics.median(per["its first member, scale 1"])
    rows = [{"specialist": name, "scales": list(models[name].scales), "flips": 4 if models[name].tta else 1,
             "images": len(images),
             "median_ms_per_image": statistics.median(ms), "ratio": statistics.median(ms) / base}
            for name, ms in per.items()]
    print(f"{args.target}: {len(images)} test images of {', '.join(args.datasets)}, {args.threads} threads")
    emit(f"{args.target} specialist cost per image, CPU", rows, args.out)


if __name__ == "__main__":
    main()
