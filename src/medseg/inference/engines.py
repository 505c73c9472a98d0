"""Inference engines: one model, several ways to run it, all behind the model's own inference interface
(U-Nets: ``engine(x) → logits``; SAM family: ``image_encoder(x)``, ``decode(emb, boxes)``, ``engine(x, boxes)``), so
:class:`medseg.inference.Predictor` does not care which one runs.

=============  =======================================================================================  =========
engine         what                                                                                     exact?
=============  =======================================================================================  =========
``eager``      the PyTorch model as trained                                                             reference
``optimized``  BatchNorm folded into convolutions + channels-last memory                                ~1e-4
``compile``    ``optimized`` + ``torch.compile`` (first call compiles: tens of seconds)                 ~1e-4
``onnx``       ONNX Runtime, fp32 (graph exported once, cached by weight digest)                        ~1e-4
``onnx-int8``  ONNX Runtime with dynamic int8 quantisation of the MatMul weights                        approx.
``auto``       SAM family on the CPU with ONNX Runtime installed: ``onnx`` (falls back to ``optimized``  ~1e-4
               if the export fails); everything else: ``optimized``
=============  =======================================================================================  =========

``benchmarks/bench_vs_reference.py`` measures their speed and mask agreement (Dice against ``eager``) on real
images; the approximate engine is kept only where its masks stay within Dice 0.99 of fp32.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.export.onnx import export_module
from medseg.models.adapters import adapter_for
from medseg.models.fuse import fuse_conv_bn
from medseg.utils.atomic import atomic_path

ENGINES = ("eager", "optimized", "compile", "onnx", "onnx-int8", "auto")
log = logging.getLogger(__name__)


def model_digest(model: nn.Module) -> str:
    """SHA-256 (16 hex) of a model's class and state — the cache key of its exported graphs."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def default_engine_cache() -> Path:
    from medseg.weights import default_cache_dir

    return default_cache_dir().parent / "onnx"


def prepare_engine(model: nn.Module, engine: str = "optimized", *, img_size: int = 256,
                   cache_dir: str | Path | None = None, threads: int | None = None) -> nn.Module:
    """``model`` ready to run with ``engine`` (see the module table); eval mode, CPU for the ONNX engines.

    Raises:
        MedsegError: unknown engine, or an ONNX export that fails / disagrees with PyTorch.
    """
    if engine not in ENGINES:
        raise MedsegError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    model = model.eval()
    if engine == "auto":
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        if on_cpu and adapter_for(model).accepts_boxes and _has_onnxruntime():
            try:
                return prepare_engine(model, "onnx", img_size=img_size, cache_dir=cache_dir, threads=threads)
            except MedsegError as exc:
                warnings.warn(f"ONNX Runtime engine unavailable ({exc}); using the optimized PyTorch engine",
                              stacklevel=2)
        engine = "optimized"
    if engine == "eager":
        return model
    if engine in ("optimized", "compile"):
        fused = fuse_conv_bn(model).to(memory_format=torch.channels_last)
        if engine == "compile":
            if adapter_for(fused).accepts_boxes:
                fused.image_encoder = torch.compile(fused.image_encoder)
            else:
                fused.forward = torch.compile(fused.forward)  # type: ignore[method-assign]
        return fused
    if not _has_onnxruntime():
        raise MedsegError(f"engine {engine!r} needs ONNX Runtime: pip install 'medseg[onnx]'")
    return OnnxEngine(model, img_size=img_size, quantize=engine == "onnx-int8",
                      cache_dir=Path(cache_dir) if cache_dir is not None else default_engine_cache(), threads=threads)


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Decode(nn.Module):
    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, emb: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.sam.decode(emb, boxes)[0]


class _Plain(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class OnnxEngine(nn.Module):
    """A medseg model run by ONNX Runtime (CPU): SAM-family models as two graphs (image encoder; prompt encoder +
    mask decoder, so that one embedding serves many boxes), U-Nets as one. Graphs are exported once per weight
    digest into ``cache_dir`` and checked against PyTorch on export; ``quantize`` adds ONNX Runtime's dynamic int8
    quantisation (weights of MatMul/Gemm ops; activations quantised at run time).

    Inputs and outputs are torch tensors (CPU) like the wrapped model's.
    """

    def __init__(self, model: nn.Module, *, img_size: int, quantize: bool, cache_dir: Path,
                 threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.accepts_boxes = adapter_for(model).accepts_boxes
        self.img_size = img_size
        key = f"{type(model).__name__}-{model_digest(model)}-{img_size}"
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        self._opts, self._quantize, self._cache, self._key = opts, quantize, cache_dir, key
        model = model.cpu().eval()
        self._model = model  # U-Nets: exported lazily, once per input size (tiles and canvases differ)
        self._nets: dict[tuple[int, int], Any] = {}
        if self.accepts_boxes:
            x, boxes = adapter_for(model).example_inputs(2, img_size)
            with torch.inference_mode():
                emb = model.image_encoder(x[:1])
            batch = torch.export.Dim("batch", min=1, max=1024)
            self._encoder = self._session("encoder", _Plain(model.image_encoder), (x,), ["images"], ({0: batch},))
            k = torch.export.Dim("boxes", min=1, max=1024)
            self._decoder = self._session("decoder", _Decode(model), (emb, boxes), ["emb", "boxes"], (None, {0: k}))

    def _session(self, name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str],
                 dynamic: tuple[dict[int, Any] | None, ...]) -> Any:
        """An ONNX Runtime session of ``module``, exported (and quantised) once into the cache."""
        import onnxruntime as ort

        path = self._cache / f"{self._key}-{name}.onnx"
        if not path.is_file():
            log.info("building the ONNX Runtime engine of %s (%s) once — up to a minute; it is cached in %s",
                     type(self._model).__name__, name, self._cache)
            t0 = time.perf_counter()
            export_module(module, inputs, path, input_names=names, dynamic=dynamic)
            log.info("ONNX Runtime engine of %s (%s) built in %.0f s", type(self._model).__name__, name,
                     time.perf_counter() - t0)
        fused = self._cache / f"{self._key}-{name}-fused.onnx"
        if not fused.is_file() and not (self._cache / f"{fused.name}.rejected").is_file():
            try:
                _fuse(path, fused, names, inputs)
            except _Rejected:
                pass
        if fused.is_file():
            path = fused
        if self._quantize:
            qpath = self._cache / f"{self._key}-{name}-int8.onnx"
            if not qpath.is_file():
                _quantize(path, qpath)
            path = qpath
        return ort.InferenceSession(str(path), sess_options=self._opts, providers=["CPUExecutionProvider"])

    def _net(self, h: int, w: int) -> Any:
        if (h, w) not in self._nets:
            x = torch.rand(2, 3, h, w)
            batch = torch.export.Dim("batch", min=1, max=1024)
            self._nets[(h, w)] = self._session(f"net{h}x{w}", _Plain(self._model), (x,), ["images"], ({0: batch},))
        return self._nets[(h, w)]

    @staticmethod
    def _run(sess: Any, *arrays: torch.Tensor) -> torch.Tensor:
        names = [i.name for i in sess.get_inputs()]
        feed = {n: np.ascontiguousarray(a.detach().cpu().numpy(), dtype=np.float32) for n, a in zip(names, arrays,
                                                                                                   strict=True)}
        return torch.from_numpy(sess.run(None, feed)[0])

    def image_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self._encoder, x)

    def decode(self, emb: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Low-resolution logits of (K, 4) ``boxes`` against one (1, C, h, w) embedding (no IoU head)."""
        return self._run(self._decoder, emb, boxes), None

    def forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        if not self.accepts_boxes:
            return self._run(self._net(*x.shape[-2:]), x)
        if boxes is None:
            raise ValueError("SAM-family engines need boxes (prompt_free_boxes for prompt-free use)")
        emb = self.image_encoder(x)
        out = torch.cat([self.decode(emb[i:i + 1], boxes[i:i + 1])[0] for i in range(x.shape[0])])
        if out.shape[-2:] != x.shape[-2:]:
            out = torch.nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def _fuse(src: Path, dest: Path, names: list[str], inputs: tuple[torch.Tensor, ...], atol: float = 1e-4) -> None:
    """ONNX Runtime's transformer graph fusions (GELU / bias-GELU kernels), kept only if the fused graph gives the
    unfused graph's outputs within ``atol``; otherwise a ``.rejected`` marker records that it was tried.

    The layer-norm fusion stays off: it turns the SAM neck's channel LayerNorm into an RMS norm
    (``SimplifiedLayerNormalization``) and changes LiteMedSAM's embeddings by up to 0.27 (onnxruntime 1.32).
    """
    import onnxruntime as ort

    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:  # a minimal ONNX Runtime build
        return
    options = FusionOptions("bert")
    options.enable_layer_norm = False
    feed = {n: t.numpy() for n, t in zip(names, inputs, strict=True)}
    ref = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with atomic_path(dest) as tmp:
        optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=1,
                       optimization_options=options).save_model_to_file(str(tmp))
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        if not float(np.abs(ref - got).max()) <= atol:
            dest.with_name(f"{dest.name}.rejected").write_text(f"max |diff| {float(np.abs(ref - got).max()):.3g}\n")
            raise _Rejected


class _Rejected(Exception):
    """The fused graph changed the outputs: the unfused one is used."""


def _quantize(src: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dest) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
