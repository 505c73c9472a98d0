"""Batched inference for every registered model (SAM family with optional boxes, and U-Nets)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medseg.data.geometry import Letterbox, letterbox_image, resize_image, unletterbox_logits
from medseg.inference.engines import OnnxEngine, prepare_engine
from medseg.inference.sliding import FLIPS, flip_tta, native_tensor, sliding_window_logits
from medseg.models.adapters import BoxPrompted, TaskModel, adapter_for
from medseg.ops.model_input import ModelInput

if TYPE_CHECKING:
    from medseg.models.io import LoadedModel


@dataclass
class Prediction:
    """One image's result: ``mask`` (H, W) bool, ``prob`` (H, W) float32 foreground probability, and for a task
    model (ESP-MedSAM, ``universal``) the ``task`` it segmented the image as; the ``universal`` model also gives the
    classifier's ``task_probability``, the ``engine`` that segmented it and whether the classifier was
    ``confident`` (probability ≥ the predictor's ``min_confidence``) and ``task_probs``, the classifier's (K,)
    posterior over every task (what batch routing re-weights)."""

    mask: np.ndarray
    prob: np.ndarray
    task: str | None = None
    task_probability: float | None = None
    engine: str | None = None
    confident: bool = True
    task_probs: np.ndarray | None = None


class Predictor:
    """Letterbox → model → logits back to the original frame → sigmoid → threshold.

    Args:
        model: a medseg model (see :mod:`medseg.models`).
        img_size: canvas side S the model was trained at (256 for LiteMedSAM).
        device: torch device.
        threshold: probability threshold for the binary mask.
        batch_size: images per forward pass.
        max_boxes_per_pass: boxes decoded together against one image embedding.
        tile, overlap, tta: sliding-window inference at native resolution and flip TTA (see below).
        scales: with ``tile``, multi-scale test-time augmentation: the image is also segmented resized by each
            factor (area averaging when shrinking) and the logits, resized back, are averaged; ``(1.0,)``: none.
            A factor under 1 shows a structure thinner in pixels, like the training images of a camera with a wider
            field of view (a patch-trained model's ``model.json`` ``scales``).
        channel: which output of a model with one output per target (``model.json``'s ``targets`` order).
        edge: edge operator applied to every input first, for a model trained on edge images (``model.json``'s
            ``edge``; :mod:`medseg.ops.edges`).
        color: ``grey`` for a model trained on grey images (``model.json``'s ``color``): inputs are converted
            first (before ``edge``; :func:`medseg.ops.prepare_input`).
        task: for a task model (ESP-MedSAM: one parameter bag and query per task), the task to segment every
            image as; ``None``: the model's classifier picks it per image (on the whole letterboxed image, also
            when tiling; flips of TTA reuse it). Each :class:`Prediction` names its task.
        engine: how the model runs (:mod:`medseg.inference.engines`): ``optimized`` (default: BatchNorm folded,
            channels-last; logits within ~1e-4 of ``eager``), ``eager``, ``compile``, ``onnx``, ``onnx-int8``
            (see ``benchmarks/bench_vs_reference.py`` for speed and mask agreement).

    For SAM-family models, ``boxes[i]`` is a (K, 4) xyxy array in image ``i``'s original pixel frame: each box is
    decoded against the cached image embedding and the K masks are merged by taking the maximum logit (the union).
    ``None`` (or no ``boxes``) means the prompt-free box of the image region. U-Nets ignore boxes.

    Native resolution: with ``tile`` set, each image is segmented at its own size by sliding ``tile``×``tile``
    windows (``overlap`` apart, Gaussian-blended logits, :mod:`medseg.inference.sliding`); SAM-family models run
    prompt-free per tile and need ``tile`` = their input size. ``tta=True`` averages the logits of the four flips
    (identity, horizontal, vertical, both) in either mode; ``scales`` averages over resized copies (tiled only).
    """

    def __init__(self, model: nn.Module, *, img_size: int = 256, device: str | torch.device = "cpu",
                 threshold: float = 0.5, batch_size: int = 8, max_boxes_per_pass: int = 32,
                 engine: str = "optimized", tile: int | None = None, overlap: float = 0.25, tta: bool = False,
                 channel: int = 0, edge: str | None = None, task: str | None = None, color: str = "rgb",
                 scales: Sequence[float] = (1.0,)) -> None:
        self.engine = engine
        self.input = ModelInput(color, edge or "none")  # type: ignore[arg-type]  (refuses an unknown colour)
        family = adapter_for(model)
        self.tasks: list[str] | None = family.tasks
        if task is not None and self.tasks is None:
            raise ValueError(f"task {task!r} given, but {type(model).__name__} is not a task model")
        if task is not None and self.tasks is not None and task not in self.tasks:
            raise ValueError(f"unknown task {task!r}; this model knows {self.tasks}")
        self.task = None if task is None or self.tasks is None else self.tasks.index(task)
        if self.tasks is not None and engine.startswith("onnx"):
            raise ValueError(f"task models run with the PyTorch engines (optimized, eager, compile), not {engine!r}: "
                             "the exported graph would not report the task")
        if engine.startswith("onnx") and torch.device(device).type != "cpu":
            raise ValueError(f"engine {engine!r} runs on the CPU; use engine='optimized' on {device}")
        model = model.eval().to(device)
        self.model = prepare_engine(model, engine, img_size=img_size)
        self.adapter = adapter_for(self.model)  # how the model (as the engine runs it) is called
        self._channels_last = engine != "eager" and not isinstance(self.model, OnnxEngine)
        self.img_size = img_size
        self.device = torch.device(device)
        self.threshold = threshold
        self.batch_size = batch_size
        self.max_boxes_per_pass = max_boxes_per_pass
        self.is_sam = family.accepts_boxes
        self.tile, self.overlap, self.tta, self.channel = tile, overlap, tta, channel
        self.scales = tuple(float(f) for f in scales)
        if not self.scales or any(not 0.1 <= f <= 4.0 for f in self.scales):
            raise ValueError(f"scales must be factors between 0.1 and 4, got {list(scales)}")
        if self.scales != (1.0,) and tile is None:
            raise ValueError("multi-scale inference (scales) needs sliding windows (tile): the letterbox canvas "
                             "has one size")
        if self.is_sam and channel:
            raise ValueError("SAM-family models have one output (channel 0)")
        if tile is not None:
            fn = self.adapter.window_logits(tile, channel=channel)  # checks a SAM-family tile is its input size
            self._tile_fn = flip_tta(fn) if tta else fn
            if self.tasks is not None and tile != img_size:
                raise ValueError(f"a task model takes {img_size}² inputs; use tile={img_size}")

    @classmethod
    def for_model(cls, loaded: LoadedModel, **kwargs: Any) -> Predictor:
        """A predictor fed as ``loaded`` was trained (its input size, edge operator, colour, the sliding-window
        tile, overlap and ``scales`` of a patch-trained model, its ``tta``); ``kwargs`` as the constructor's
        (e.g. ``device``, ``tile``, ``task``) override them."""
        opts: dict[str, Any] = {"img_size": loaded.img_size, "edge": loaded.edge, "color": loaded.color,
                                "tile": loaded.tile, "overlap": loaded.overlap, **kwargs}
        if opts["tile"] is not None and "scales" not in kwargs:
            opts["scales"] = loaded.scales
        if "tta" not in kwargs:
            opts["tta"] = loaded.tta
        return cls(loaded.model, **opts)

    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray | None] | None = None,
                progress: Callable[[int], None] | None = None) -> list[Prediction]:
        """Predict masks for (H, W, 3) uint8 ``images`` (sizes may differ)."""
        return [r[0] for r in self.predict_prompt_sets(images, [boxes], progress)]

    def predict_prompt_sets(self, images: Sequence[np.ndarray],
                            prompt_sets: Sequence[Sequence[np.ndarray | None] | None],
                            progress: Callable[[int], None] | None = None) -> list[list[Prediction]]:
        """Like :meth:`predict` for several prompt sets at once, encoding each image only once.

        Returns one list per image with one :class:`Prediction` per prompt set.
        """
        out: list[list[Prediction]] = []
        images = [self.input(im) for im in images]
        with torch.inference_mode():
            if self.tile is not None:
                if any(ps is not None and any(b is not None and len(b) for b in ps) for ps in prompt_sets):
                    raise ValueError("box prompts are not tiled: predict with tile=None to use boxes")
                # windows one at a time on the CPU: faster there than batches of 8 (benchmarks/bench_sliding.py)
                windows = 1 if self.device.type == "cpu" else self.batch_size
                for img in images:
                    fn, task = self._tile_fn, None
                    if self.tasks is not None:  # one task for the whole image, then every window segmented as it
                        task = self.task if self.task is not None else int(self._classify([img])[0])
                        fn = self.adapter.window_logits(self.tile, task=task)
                        fn = flip_tta(fn) if self.tta else fn
                    logits = self._multiscale_logits(fn, img, windows)
                    out.append([self._prediction(logits, task)] * len(prompt_sets))
                    if progress is not None:
                        progress(1)
                return out
            for start in range(0, len(images), self.batch_size):
                chunk = list(images[start:start + self.batch_size])
                sets = [None if b is None else list(b[start:start + len(chunk)]) for b in prompt_sets]
                flips = FLIPS if self.tta else ((),)
                total: list[list[torch.Tensor]] | None = None
                tasks = None if self.task is None else torch.full((len(chunk),), self.task, dtype=torch.int64)
                for dims in flips:  # TTA in the image's own frame: the letterbox padding stays bottom/right
                    imgs = [_flip_image(im, dims) for im in chunk]
                    boxes = [_flip_box_set(b, chunk, dims) for b in sets]
                    per_image, tasks = self._letterbox_logits(imgs, boxes, tasks)  # flips keep the first's task
                    logits = [[_flip_logits(lg, dims) for lg in per] for per in per_image]
                    total = logits if total is None else [[t + lg for t, lg in zip(tp, lp, strict=True)]
                                                          for tp, lp in zip(total, logits, strict=True)]
                assert total is not None
                out += [[self._prediction(lg / len(flips), None if tasks is None else int(tasks[i])) for lg in per]
                        for i, per in enumerate(total)]
                if progress is not None:
                    progress(len(chunk))
        return out

    def _multiscale_logits(self, fn: Callable[[torch.Tensor], torch.Tensor], img: np.ndarray,
                           windows: int) -> torch.Tensor:
        """(H, W) float32 logits of the (H, W, C) ``img`` by sliding windows, averaged over ``scales`` (each
        resized copy's logits resized back bilinearly)."""
        h, w = img.shape[:2]
        total: torch.Tensor | None = None
        for f in self.scales:
            scaled = img if f == 1.0 else resize_image(img, (max(1, round(h * f)), max(1, round(w * f))))
            xs = native_tensor(scaled).to(self.device)
            lg = sliding_window_logits(fn, xs, tile=self.tile, overlap=self.overlap, batch_size=windows).float()
            if lg.shape[-2:] != (h, w):
                lg = F.interpolate(lg, size=(h, w), mode="bilinear", align_corners=False)
            total = lg if total is None else total + lg
        assert total is not None
        return (total / len(self.scales))[0, 0]

    def _prediction(self, logits: torch.Tensor, task: int | None = None) -> Prediction:
        prob = torch.sigmoid(logits.float()).cpu().numpy()
        name = None if task is None or self.tasks is None else self.tasks[task]
        return Prediction(mask=prob > self.threshold, prob=prob, task=name)

    def _canvas(self, chunk: list[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        prepped = [letterbox_image(img, self.img_size) for img in chunk]
        x = torch.from_numpy(np.stack([p[0] for p in prepped])).to(self.device)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, [p[1] for p in prepped]

    def _classify(self, chunk: list[np.ndarray]) -> torch.Tensor:
        """(B,) task indices a task model's classifier gives the letterboxed images (shared stages only)."""
        x, _ = self._canvas(chunk)
        assert isinstance(self.adapter, TaskModel)
        return self.adapter.task_logits(x).argmax(1).cpu()

    def _letterbox_logits(self, chunk: list[np.ndarray], prompt_sets: list[list[np.ndarray | None] | None],
                          tasks: torch.Tensor | None = None) -> tuple[list[list[torch.Tensor]], torch.Tensor | None]:
        """(H, W) logits in each image's own frame, one per prompt set, for a chunk of images; and for a task model
        the (B,) tasks used (``tasks`` given: those, else the classifier's)."""
        x, geos = self._canvas(chunk)
        if isinstance(self.adapter, BoxPrompted):
            emb = self.adapter.encode(x)
            per_set = [self.decode_boxes(x.shape[-1], emb, geos, [None] * len(chunk) if b is None else b)
                       for b in prompt_sets]
        elif isinstance(self.adapter, TaskModel):  # prompt-free task model: one pass, the task chosen or given
            res = self.adapter.forward_all(x, None if tasks is None else tasks.to(self.device))
            tasks = res.task.cpu()
            per_set = [list(res.logits)] * len(prompt_sets)
        else:  # U-Nets ignore boxes: one forward pass serves every prompt set
            per_set = [list(self.adapter.logits(x, channel=self.channel))] * len(prompt_sets)
        return [[unletterbox_logits(logits[i][None].float(), geo)[0, 0] for logits in per_set]
                for i, geo in enumerate(geos)], tasks

    def decode_boxes(self, size: int, emb: torch.Tensor, geos: list[Letterbox],
                boxes: list[np.ndarray | None]) -> list[torch.Tensor]:
        """SAM canvas logits (1, S, S) per image (S = ``size``), one decoder pass per box (chunked), merged by max."""
        result = []
        for i, geo in enumerate(geos):
            b = geo.prompt_free_box()[None] if boxes[i] is None or len(boxes[i]) == 0 else geo.box_to_canvas(boxes[i])
            bt = torch.as_tensor(np.asarray(b, dtype=np.float32).reshape(-1, 4), device=self.device)
            merged = None
            for chunk in bt.split(self.max_boxes_per_pass):  # bounds memory: the decoder copies the embedding per box
                low = self.adapter.decode(emb[i:i + 1], chunk)  # type: ignore[attr-defined]
                low = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).amax(dim=0)
                merged = low if merged is None else torch.maximum(merged, low)
            result.append(merged)
        return result


def _flip_image(image: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """Flip an (H, W, C) image along torch-style dims (-1 = width, -2 = height)."""
    for d in dims:
        image = image[:, ::-1] if d == -1 else image[::-1]
    return np.ascontiguousarray(image)


def _flip_boxes(boxes: np.ndarray | None, hw: tuple[int, int], dims: tuple[int, ...]) -> np.ndarray | None:
    """Flip (K, 4) xyxy boxes of an (H, W) image like :func:`_flip_image`."""
    if boxes is None or len(boxes) == 0:
        return boxes
    b = np.asarray(boxes, dtype=np.float32).copy()
    h, w = hw
    for d in dims:
        if d == -1:
            b[:, [0, 2]] = (w - 1) - b[:, [2, 0]]
        else:
            b[:, [1, 3]] = (h - 1) - b[:, [3, 1]]
    return b


def _flip_box_set(boxes: list[np.ndarray | None] | None, images: list[np.ndarray], dims: tuple[int, ...]
                  ) -> list[np.ndarray | None] | None:
    """One prompt set (boxes per image, or None = prompt-free) flipped with its images."""
    if boxes is None:
        return None
    return [_flip_boxes(b, im.shape[:2], dims) for b, im in zip(boxes, images, strict=True)]


def _flip_logits(logits: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return torch.flip(logits, dims) if dims else logits
