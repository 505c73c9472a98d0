"""LiteMedSAM on the shared real data: box-prompted (boxes from the ground truth) and prompt-free (whole-image box).

    python benchmarks/eval_lite_medsam.py --data ../shared/data --out benchmarks/results [--split test|all] [--limit N]

``--split test`` (default) scores the test split of the benchmarks' reference split (``_common.reference_split``),
the same images as ``train_real_baseline.py`` and the method tables; ``all`` scores every image.

Each image is encoded once and decoded with both prompt sets. GT boxes: one per 8-connected ground-truth component
of ≥ 10 px (CVPR24 style one box per object), masks merged by union. Writes per-image CSV and a per-modality /
per-dataset Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import reference_split, versions_line
from medseg.data import load_samples
from medseg.data.geometry import boxes_from_mask
from medseg.evaluation import format_markdown_table, write_csv
from medseg.inference import Predictor
from medseg.metrics import MetricConfig, SegmentationMetric
from medseg.models import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--weights", default=None, help="checkpoint file (default: the registered lite_medsam)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--limit", type=int, default=0, help="images per dataset (0 = all)")
    ap.add_argument("--split", choices=("test", "all"), default="test")
    args = ap.parse_args()

    model = build_model("lite_medsam", pretrained=args.weights or True)
    predictor = Predictor(model, img_size=256, batch_size=4)
    entries = reference_split(args.data)
    if args.split == "test":
        entries = [e for e in entries if e.split == "test"]
    per_ds: dict[str, int] = {}
    metrics = {"gt_box": SegmentationMetric(MetricConfig()), "whole_image": SegmentationMetric(MetricConfig())}
    t0 = time.perf_counter()
    n = 0
    for e in entries:
        key = f"{e.modality}/{e.dataset}"
        if args.limit and per_ds.get(key, 0) >= args.limit:
            continue
        per_ds[key] = per_ds.get(key, 0) + 1
        for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset):
            gt = s.binary_mask()
            gt_boxes = boxes_from_mask(gt, per_component=True, min_area=10)
            (p_box, p_free), = predictor.predict_prompt_sets([s.image], [[gt_boxes], None])
            for name, p in (("gt_box", p_box), ("whole_image", p_free)):
                metrics[name](p.mask, gt, case=s.case_id, modality=s.modality, dataset=s.dataset,
                              n_boxes=len(gt_boxes))
            n += 1
            if n % 50 == 0:
                print(f"{n} images, {time.perf_counter() - t0:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, m in metrics.items():
        write_csv(m.rows, args.out / f"lite_medsam_{name}_per_image.csv")
        for r in m.summary(by=("modality", "dataset")):
            rows.append({"prompt": name, **{k: r[k] for k in ("modality", "dataset", "n", "dice_mean", "nsd_mean",
                                                               "iou_mean", "hd95_median")}})
    write_csv(rows, args.out / "lite_medsam_summary.csv")
    table = format_markdown_table(rows, digits=3)
    (args.out / "lite_medsam_summary.md").write_text(
        f"LiteMedSAM on {n} real images ({args.split} split; {time.perf_counter() - t0:.0f} s, CPU){versions_line()}"
        f"\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
