"""ONNX export with an ONNX Runtime inference path whose outputs are checked against PyTorch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.models.adapters import adapter_for
from medseg.utils.atomic import atomic_path


class _ExportWrapper(nn.Module):
    """Fixes the call signature: ``(images[, boxes]) → logits`` (the family's adapter's ``call``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        return adapter_for(self.model).call(images, boxes)


def input_names(model: nn.Module) -> list[str]:
    """The exported graph's input names: ``images`` (+ ``boxes`` for SAM-family models)."""
    return adapter_for(model).input_names


@dataclass
class OnnxExport:
    path: Path
    max_abs_diff: float
    batch: int


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress prints, its warnings (e.g. that torchvision is absent) and log lines are its own
    business: medseg says in one line what it exports (:mod:`medseg.inference.engines`)."""
    import io
    import logging
    import warnings

    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_module(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: str | Path, *, input_names: list[str],
                  output_name: str = "out", dynamic: tuple[dict[int, Any] | None, ...] | None = None,
                  opset: int = 18, atol: float = 1e-3) -> float:
    """Export ``module`` to ``path`` atomically (dynamo exporter, one file) and check ONNX Runtime against PyTorch
    on ``inputs`` before the file appears. The one export path of medseg: ``export_onnx`` and the ONNX engines of
    :mod:`medseg.inference.engines` both go through it.

    Args:
        inputs: example tensors, one per name in ``input_names``.
        dynamic: per input, ``{axis: torch.export.Dim}`` or None (static).

    Returns:
        The largest absolute difference between the runtime's and PyTorch's first output.

    Raises:
        MedsegError: export failed, or the outputs differ by more than ``atol`` (nothing is written then).
    """
    import onnxruntime as ort

    module = module.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        try:
            with _quiet():
                prog = torch.onnx.export(module, inputs, input_names=input_names, output_names=[output_name],
                                         dynamic_shapes=dynamic, opset_version=opset, dynamo=True,
                                         external_data=False, verbose=False)
                prog.save(str(tmp))
        except Exception as exc:  # the exporter raises many types
            raise MedsegError(f"ONNX export of {type(module).__name__} failed: {exc}") from exc
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            ref = module(*inputs).numpy()
        got = sess.run(None, {n: t.numpy() for n, t in zip(input_names, inputs, strict=True)})[0]
        diff = float(np.abs(ref - got).max())
        if not diff <= atol:
            raise MedsegError(f"{path}: ONNX Runtime output differs from PyTorch by {diff:.2e} (> {atol})")
    return diff


def export_onnx(model: nn.Module, path: str | Path, *, img_size: int, opset: int = 18, check_batch: int = 2,
                atol: float = 1e-3) -> OnnxExport:
    """Export ``model`` (dynamic batch axis) and verify ONNX Runtime against PyTorch on random input.

    Shape:
        inputs ``images`` (B, 3, S, S) float32 [0, 1] (+ ``boxes`` (B, 4) xyxy for SAM-family models)
        → ``logits`` (B, 1, S, S).

    Raises:
        MedsegError: export failed or the runtime's logits differ from PyTorch's by more than ``atol``.
    """
    model = model.eval().cpu()
    wrapper = _ExportWrapper(model).eval()
    names = input_names(model)
    example = adapter_for(model).example_inputs(check_batch, img_size)
    batch = torch.export.Dim("batch", min=1, max=1024)
    dynamic = tuple({0: batch} for _ in names)
    diff = export_module(wrapper, tuple(example), path, input_names=names, output_name="logits", dynamic=dynamic,
                         opset=opset, atol=atol)
    return OnnxExport(Path(path), diff, check_batch)


class OnnxPredictor:
    """Runs an exported model with ONNX Runtime (CPU by default): ``(images[, boxes]) → logits`` as NumPy.

    SAM-family models need ``boxes`` in the canvas frame; prompt-free boxes come from
    :func:`medseg.data.geometry.prompt_free_boxes` (the image region, not the padded canvas).
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=opts,
                                            providers=providers or ["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, images: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        feed = {"images": np.ascontiguousarray(images, dtype=np.float32)}
        if "boxes" in self.inputs:
            if boxes is None:
                raise MedsegError("this ONNX model takes boxes: pass medseg.data.geometry.prompt_free_boxes(...) "
                                  "for prompt-free use")
            feed["boxes"] = np.ascontiguousarray(boxes, dtype=np.float32)
        return self.session.run(["logits"], feed)[0]
