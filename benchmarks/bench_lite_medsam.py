"""LiteMedSAM inference paths side by side at 256², prompt-free (whole-image box), batch 1 and 8:
ours eager (fp32) vs BN-folded vs channels-last vs ``torch.compile`` vs ONNX Runtime.
Every path's logits are checked against eager.

    python benchmarks/bench_lite_medsam.py [--repeats 5] [--threads 2] [--batches 1 8] [--no-compile]
                                           [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from _common import emit, run_times, spread
from medseg.data.geometry import prompt_free_boxes, square_geometry
from medseg.export import OnnxPredictor, export_onnx
from medseg.models import build_model
from medseg.models.fuse import fuse_conv_bn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--weights", default=None, help="lite_medsam checkpoint (default: registered weights)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    eager = build_model("lite_medsam", pretrained=args.weights or True).eval()
    fused = fuse_conv_bn(eager)
    cl = fuse_conv_bn(eager).to(memory_format=torch.channels_last)
    paths: dict[str, Callable[[torch.Tensor, torch.Tensor], np.ndarray]] = {}

    def torch_path(model: torch.nn.Module, channels_last: bool = False
                   ) -> Callable[[torch.Tensor, torch.Tensor], np.ndarray]:
        def run(x: torch.Tensor, boxes: torch.Tensor) -> np.ndarray:
            with torch.inference_mode():
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                return model(x, boxes).numpy()
        return run

    paths["eager fp32"] = torch_path(eager)
    paths["BN-folded"] = torch_path(fused)
    paths["BN-folded + channels-last"] = torch_path(cl, channels_last=True)
    if not args.no_compile:
        compiled = torch.compile(fuse_conv_bn(eager), dynamic=False)
        paths["BN-folded + torch.compile"] = torch_path(compiled)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "lite_medsam.onnx"
        export_onnx(eager, onnx_path, img_size=256)
        ort = OnnxPredictor(onnx_path, threads=args.threads)
        paths["ONNX Runtime (CPU EP)"] = lambda x, boxes: ort(x.numpy(), boxes.numpy())

        rows = []
        for b in args.batches:
            x = torch.rand(b, 3, 256, 256)
            boxes = torch.from_numpy(prompt_free_boxes([square_geometry(256)] * b))  # the shared prompt-free box
            ref = paths["eager fp32"](x, boxes)
            times = {}
            for name, fn in paths.items():
                warm = 3 if "compile" in name else 1
                ts, out = run_times(lambda fn=fn, x=x, boxes=boxes: fn(x, boxes), args.repeats, warmup=warm)
                t = statistics.median(ts)
                diff = float(np.abs(out - ref).max())
                agree = float(((out > 0) == (ref > 0)).mean())
                times[name] = t
                rows.append({"batch": b, "path": name, "median_ms": t * 1e3,
                             "min_max_ms": spread([v * 1e3 for v in ts]), "images_per_s": b / t,
                             "max_abs_logit_diff": diff, "mask_agreement": agree})
            for r in rows:
                if r["batch"] == b:
                    r["speed_vs_eager"] = times["eager fp32"] / times[r["path"]]
    emit("LiteMedSAM inference 256² CPU", rows, args.out)


if __name__ == "__main__":
    main()
