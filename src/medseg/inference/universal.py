"""Inference with the ``universal`` model (:mod:`medseg.models.universal`): no prompt, no modality.

Per batch of images: letterbox → LiteMedSAM's encoder (once) → the head's classifier names each image's task and
its probability → the task's engine segments it: the head on the same embedding, or the task's native-resolution
specialist by sliding windows. Images given boxes (a person's correction) get LiteMedSAM's box-prompted masks
instead. Each :class:`Prediction` says the task, its probability, the engine, and whether the classifier was at
least ``min_confidence`` sure.

Routing: with ``routing="image"`` each image takes its own most probable task. With ``routing="batch"`` the images
predicted together (one ``predict`` call, or every file of one ``medseg predict``) also share a task prior: the
classifier's posteriors, tempered by the model's ``routing_temperature``, go through EM label-shift adaptation
(:mod:`medseg.routing.label_shift`), and each image takes the task of its adjusted posterior. ``routing="auto"`` does
the same only when one task holds at least ``routing_min_share`` (0.5) of the batch's prior
(:func:`~medseg.routing.label_shift.gated_prior`): a folder of one dataset shares its prior, a folder mixing many
is routed image by image, and a single image is always routed on its own. ``auto`` is what ``medseg predict`` and
:meth:`UniversalPredictor.from_folder` use unless told otherwise (``image`` with ``fast``; see
:func:`default_routing`). Both need two passes (classify all, then segment); the embeddings of the first are kept
in an on-disk :class:`~medseg.inference.spool.EmbeddingSpool` (4 MB per 2-D image), so the encoder runs once per
image.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medseg.data.geometry import letterbox_geometry, letterbox_image, unletterbox_logits
from medseg.inference.predictor import Prediction, Predictor
from medseg.inference.spool import EmbeddingSpool
from medseg.models.adapters import EmbeddingHead
from medseg.models.universal import UniversalModel
from medseg.routing.label_shift import adjust_posteriors, batch_prior, temper

#: how images are routed to tasks: each on its own, sharing the task prior of the batch, or sharing it only when
#: one task holds a majority of it
ROUTING_MODES = ("image", "batch", "auto")
#: ``auto`` routing's gate: the batch prior's largest share at which it is shared (fixed before its leave-datasets-out
#: test, ``benchmarks/batch_routing.py --gate``)
AUTO_MIN_SHARE = 0.5


def default_routing(fast: bool = False) -> str:
    """The routing ``medseg predict universal`` uses unless told: ``auto`` (chosen on leave-datasets-out folds at the
    main encoder, ``benchmarks/batch_routing.py --gate 0.5``), ``image`` with ``fast`` (whose classifier failed the
    same test at 128²: one in-domain image lost in mixed folders)."""
    return "image" if fast else "auto"


class UniversalPredictor:
    """Segments any image of a task the model knows (see the module docstring).

    Args:
        model: a :class:`UniversalModel`.
        device: torch device.
        threshold: probability threshold of the masks.
        batch_size: images per encoder pass.
        engine: how LiteMedSAM's encoder and decoder run (``optimized``, ``eager``, ``compile``, ``onnx``; ``auto``:
            ``optimized``).
        min_confidence: a task probability below this marks the prediction as unsure (``confident=False``); the
            image is still segmented as the most probable task, and the caller lists it.
        task: segment every image as this task (``None``: the classifier's choice).
        fast: the model's fast encoder (its ``student``) instead of LiteMedSAM's, and its head (``fast_head``, or
            the head) for every task, no specialist; boxes then go through LiteMedSAM's decoder on that embedding.
        keep_specialists: with ``fast``, the tasks whose engine is a specialist keep it (the fast encoder then only
            names their task); the other tasks run the fast head.
        routing: ``image`` (each image's own most probable task), ``batch`` (the images of one ``predict`` call
            share a task prior) or ``auto`` (they share it if one task holds at least ``routing_min_share`` of it);
            see the module docstring. Ignored when ``task`` is given.
        routing_temperature: the temperature of the posteriors that batch routing adapts (< 1 sharpens; the
            model folder's ``routing_temperature``, fitted on datasets the classifier never saw).
        routing_min_share: ``auto`` routing's gate (:data:`AUTO_MIN_SHARE`).
        specialist_tta: flip test-time augmentation of every specialist on (``True``) or off (``False``; e.g. the
            shipped vessel specialist at a quarter of its cost); ``None``: each as its ``model.json`` says. The
            head is never flipped.
    """

    def __init__(self, model: UniversalModel, *, device: str | torch.device = "cpu", threshold: float = 0.5,
                 batch_size: int = 8, engine: str = "optimized", min_confidence: float = 0.0,
                 task: str | None = None, fast: bool = False, keep_specialists: bool = False,
                 routing: str = "image", routing_temperature: float = 1.0,
                 routing_min_share: float = AUTO_MIN_SHARE, specialist_tta: bool | None = None) -> None:
        _check_task(model, task)
        if routing not in ROUTING_MODES:
            raise ValueError(f"unknown routing {routing!r}; use one of {', '.join(ROUTING_MODES)}")
        if not routing_temperature > 0:
            raise ValueError(f"routing_temperature must be positive, got {routing_temperature}")
        if not 0 < routing_min_share <= 1:
            raise ValueError(f"routing_min_share must be in (0, 1], got {routing_min_share}")
        if fast and model.student is None:
            raise ValueError("this universal model has no student encoder, so no --fast mode")
        if keep_specialists and not fast:
            raise ValueError("keep_specialists applies to the fast mode only (the model's own engines already do)")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.model = model.eval().to(device)
        self.device, self.threshold, self.batch_size = torch.device(device), threshold, batch_size
        self.min_confidence, self.task = min_confidence, task
        self.routing, self.routing_temperature, self.routing_min_share = routing, routing_temperature, routing_min_share
        self.img_size = model.img_size
        engine = "optimized" if engine == "auto" else engine
        # LiteMedSAM as the box-prompted predictor runs it; its prepared encoder also feeds the head
        sam = model.student if fast and model.student is not None else model.sam
        self._boxes = Predictor(sam, img_size=self.img_size, device=device, threshold=threshold, batch_size=1,
                                engine=engine)
        self._encoder = self._boxes.adapter  # BoxPrompted: encode once, the head and any boxes decode
        self._head = EmbeddingHead(self.model.fast_head if fast and self.model.fast_head is not None
                                   else self.model.head)
        self.engines = dict(model.engines) if keep_specialists or not fast else {t: "head" for t in model.tasks}
        flips = {} if specialist_tta is None else {"tta": specialist_tta}
        self._specialists = {
            t: Predictor(m, device=device, threshold=threshold, engine="optimized",
                         **{**model.specialist_options[t], **flips})
            for t, m in model.specialists.items() if self.engines.get(t) == "specialist"}

    @classmethod
    def from_folder(cls, spec: str = "universal", **kwargs: object) -> UniversalPredictor:
        """The predictor of a ``universal`` model folder (default: the one shipped with medseg) in one line, with
        the folder's ``min_confidence`` and ``routing_temperature`` and :func:`default_routing` unless given;
        ``kwargs`` as the constructor's (``device``, ``fast``, ``routing``, …).

        Example::

            pred = UniversalPredictor.from_folder()            # no prompt, no modality
            p = pred.predict([image])[0]                       # p.mask, p.task, p.task_probability, p.engine
        """
        from medseg.models.io import load_model

        loaded = load_model(spec, device=str(kwargs.get("device", "cpu")))
        if loaded.name != "universal":
            raise ValueError(f"{spec} is a {loaded.name} model, not a universal one")
        kwargs.setdefault("min_confidence", float(loaded.meta.get("min_confidence", 0.5)))
        kwargs.setdefault("routing_temperature", routing_temperature_of(loaded.meta, bool(kwargs.get("fast"))))
        kwargs.setdefault("routing", default_routing(bool(kwargs.get("fast"))))
        return cls(loaded.model, **kwargs)  # type: ignore[arg-type]

    @property
    def tasks(self) -> list[str]:
        return self.model.tasks

    def with_task(self, task: str | None) -> UniversalPredictor:
        """This predictor segmenting every image as ``task`` (``None``: the classifier's choice), sharing its
        prepared encoder, head and specialists (no second copy of any engine)."""
        _check_task(self.model, task)
        other = copy.copy(self)
        other.task = task
        return other

    @property
    def batch_routed(self) -> bool:
        """Whether ``predict`` estimates the batch's task prior (``routing`` ``batch`` or ``auto``, no fixed
        task): two passes."""
        return self.routing in ("batch", "auto") and self.task is None

    def predict(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray | None] | None = None,
                progress: Callable[[int], None] | None = None, *, embeddings: np.ndarray | None = None,
                task_prior: np.ndarray | None = None) -> list[Prediction]:
        """Masks for (H, W, 3) uint8 ``images`` (sizes may differ); ``boxes[i]``: (K, 4) xyxy boxes in image ``i``'s
        frame for LiteMedSAM's box-prompted mask, or ``None``.

        With batch routing and no ``task_prior`` the images are one batch: all are classified first (their
        embeddings spooled to disk), then segmented under the batch's prior. ``embeddings`` (N, C, h, w) from
        :meth:`encode_into` skip the encoder; ``task_prior`` (K,) from :meth:`batch_prior` routes by that prior
        (batches spanning several calls, e.g. files).
        """
        if self.batch_routed and task_prior is None and len(images):
            with EmbeddingSpool() as spool:
                probs = self.encode_into(images, spool, 0)
                return self.predict(images, boxes, progress, embeddings=spool.get(0),
                                    task_prior=self.batch_prior(probs))
        if embeddings is not None and len(embeddings) != len(images):
            raise ValueError(f"{len(embeddings)} embeddings for {len(images)} images (did the input change between "
                             "the two passes of batch routing?)")
        out: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start:start + self.batch_size])
            chunk_boxes = [None] * len(chunk) if boxes is None else list(boxes[start:start + len(chunk)])
            emb = None if embeddings is None else torch.from_numpy(  # a copy: the spool is read-only
                np.array(embeddings[start:start + len(chunk)], dtype=np.float32)).to(self.device)
            out += self._predict_chunk(chunk, chunk_boxes, emb, task_prior)
            if progress is not None:
                progress(len(chunk))
        return out

    @torch.inference_mode()
    def encode_into(self, images: Sequence[np.ndarray], spool: EmbeddingSpool, key: int) -> np.ndarray:
        """First pass of batch routing: the images' embeddings into ``spool`` entry ``key`` ((N, C, h, w) float32)
        and their task posteriors.

        Returns:
            (N, K) float64 the classifier's posteriors (untempered).
        """
        probs, out = [], None
        for start in range(0, len(images), self.batch_size):
            emb, _ = self._encode(list(images[start:start + self.batch_size]))
            if out is None:
                out = spool.create(key, (len(images), *emb.shape[1:]))
            out[start:start + len(emb)] = emb.cpu().numpy()
            probs.append(torch.softmax(self._head.task_logits(emb).float(), dim=1).double().cpu().numpy())
        if out is not None:
            out.flush()
        return np.concatenate(probs) if probs else np.zeros((0, len(self.tasks)))

    def batch_prior(self, probs: np.ndarray) -> np.ndarray:
        """(K,) the task prior of a batch from its (N, K) posteriors (:meth:`encode_into`'s), tempered by
        ``routing_temperature`` then adapted by EM; with ``auto`` routing the uniform prior (each image its own
        task) unless one task holds at least ``routing_min_share`` of it."""
        return batch_prior(probs, self.routing_temperature,
                           self.routing_min_share if self.routing == "auto" else None)

    def batch_routes(self, probs: np.ndarray, task_prior: np.ndarray) -> np.ndarray:
        """(N,) int64 the task index of each image under a batch's ``task_prior`` (:meth:`batch_prior`): the argmax
        of its tempered (N, K) posteriors ``probs`` adjusted to that prior."""
        return adjust_posteriors(temper(probs, self.routing_temperature), task_prior).argmax(1).astype(np.int64)

    @torch.inference_mode()
    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """(task, probability) of each image by the classifier (no segmentation)."""
        emb, _ = self._encode(list(images))
        probs = torch.softmax(self._head.task_logits(emb).float(), dim=1)
        p, i = probs.max(dim=1)
        return [(self.tasks[int(k)], float(v)) for k, v in zip(i, p, strict=True)]

    def _encode(self, chunk: list[np.ndarray]) -> tuple[torch.Tensor, list]:
        prepped = [letterbox_image(img, self.img_size) for img in chunk]
        x = torch.from_numpy(np.stack([p[0] for p in prepped])).to(self.device)
        return self._encoder.encode(x).float(), [p[1] for p in prepped]  # type: ignore[attr-defined]

    @torch.inference_mode()
    def _predict_chunk(self, chunk: list[np.ndarray], boxes: list[np.ndarray | None],
                       emb: torch.Tensor | None = None, task_prior: np.ndarray | None = None) -> list[Prediction]:
        if emb is None:
            emb, geos = self._encode(chunk)
        else:
            geos = [letterbox_geometry(img.shape[:2], self.img_size) for img in chunk]  # spooled: no canvas
        head = self._head
        probs = torch.softmax(head.task_logits(emb).float(), dim=1)
        if self.task is not None:
            task = torch.full((len(chunk),), self.tasks.index(self.task), dtype=torch.int64, device=emb.device)
        elif task_prior is not None:
            task = torch.from_numpy(self.batch_routes(probs.double().cpu().numpy(), task_prior)).to(emb.device)
        else:
            task = probs.argmax(dim=1)
        result: list[Prediction | None] = [None] * len(chunk)
        on_head = [i for i in range(len(chunk))
                   if boxes[i] is None and self.engines[self.tasks[int(task[i])]] == "head"]
        if on_head:
            logits = head.forward_all(emb[on_head], task[on_head]).logits
            for j, i in enumerate(on_head):
                lg = unletterbox_logits(logits[j:j + 1].float(), geos[i])[0, 0]
                result[i] = self._prediction(lg, i, task, probs, "head")
        for i in range(len(chunk)):
            if result[i] is not None:
                continue
            name = self.tasks[int(task[i])]
            if boxes[i] is not None and len(boxes[i]):  # a person's boxes: LiteMedSAM's box-prompted mask
                lg = self._boxes.decode_boxes(self.img_size, emb[i:i + 1], [geos[i]], [boxes[i]])[0]
                lg = unletterbox_logits(lg[None].float(), geos[i])[0, 0]
                result[i] = self._prediction(lg, i, task, probs, "lite_medsam_box")
            elif self.engines[name] == "specialist":
                p = self._specialists[name].predict([chunk[i]])[0]
                result[i] = Prediction(p.mask, p.prob, name, float(probs[i, int(task[i])]), "specialist",
                                       self._confident(probs[i], int(task[i])), probs[i].cpu().numpy())
            else:  # boxes given but empty: prompt-free as usual
                lg = head.forward_all(emb[i:i + 1], task[i:i + 1]).logits
                lg = unletterbox_logits(lg.float(), geos[i])[0, 0]
                result[i] = self._prediction(lg, i, task, probs, "head")
        return [r for r in result if r is not None]

    def _prediction(self, logits: torch.Tensor, i: int, task: torch.Tensor, probs: torch.Tensor,
                    engine: str) -> Prediction:
        prob = torch.sigmoid(logits.float()).cpu().numpy()
        k = int(task[i])
        return Prediction(prob > self.threshold, prob, self.tasks[k], float(probs[i, k]), engine,
                          self._confident(probs[i], k), probs[i].cpu().numpy())

    def _confident(self, probs: torch.Tensor, k: int) -> bool:
        """The classifier gave the image's task (its own choice) at least ``min_confidence``; with a fixed
        ``task``: its own most probable task, as before."""
        return float(probs[k] if self.task is None else probs.max()) >= self.min_confidence


def routing_temperature_of(meta: dict, fast: bool = False) -> float:
    """A universal model folder's ``routing_temperature`` for its main (or ``fast``) classifier; 1 if it has none."""
    return float((meta.get("routing_temperature") or {}).get("fast" if fast else "main", 1.0))


def _check_task(model: UniversalModel, task: str | None) -> None:
    if task is not None and task not in model.tasks:
        raise ValueError(f"unknown task {task!r}; this model knows {', '.join(model.tasks)}")
