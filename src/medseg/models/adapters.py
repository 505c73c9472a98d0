"""How each model family is called: one small adapter per family, as segment-anything's ``SamPredictor`` wraps
``Sam``. Prediction, sliding windows, training, the inference engines and export call a model only through its
adapter (:func:`adapter_for`), so a new family is one new class here.

=====================  ==============================================  ==============================================
adapter                models                                          call
=====================  ==============================================  ==============================================
:class:`PerTarget`     U-Nets, CMMC's models: one output per target    ``model(x)`` → (B, T, S, S), an output chosen
:class:`BoxPrompted`   LiteMedSAM and its students (the SAM family)    ``model(x, boxes)``: boxes (B, 4) xyxy on the
                                                                       canvas, default the image-region box
:class:`TaskModel`     ESP-MedSAM: one output, segmented as a task     ``model(x, task)``: task (B,) int64, default
                                                                       the classifier's
:class:`EmbeddingHead` the prompt-free head: a task model on a         as :class:`TaskModel`, on (B, C, S/4, S/4)
                       frozen encoder's embeddings                     embeddings instead of images
=====================  ==============================================  ==============================================

Shapes: images (B, 3, S, S) float32 in [0, 1]; logits (B, 1, S, S) float (one output) unless stated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medseg.data.geometry import prompt_free_boxes, square_geometry
from medseg.models.parts import accepts_boxes, model_tasks, takes_embeddings

#: ``x → (B, 1, h, w) logits``
Logits = Callable[[torch.Tensor], torch.Tensor]


class PerTarget:
    """A model with one output channel per target (``model(x)`` → (B, T, S, S)); prompts do not apply."""

    family = "per_target"
    accepts_boxes = False
    takes_embeddings = False
    #: a task model's task names in output order; ``None``: one output per target
    tasks: list[str] | None = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    def input_names(self) -> list[str]:
        """The names of :meth:`call`'s inputs (the exported graph's)."""
        return ["images"]

    def logits(self, x: torch.Tensor, *, channel: int = 0, task: int | None = None) -> torch.Tensor:
        """(B, 1, S, S) logits of output ``channel`` for (B, 3, S, S) images (``task``: task models only)."""
        return self.model(x)[:, channel:channel + 1]

    def window_logits(self, tile: int | None = None, *, channel: int = 0, task: int | None = None) -> Logits:
        """``x → logits`` for ``tile``×``tile`` windows (:mod:`medseg.inference.sliding`), output ``channel``, or
        every window segmented as ``task`` (task models; ``None``: the classifier decides per window).

        Raises:
            ValueError: the family cannot segment such windows (see the subclasses).
        """
        return lambda x: self.logits(x, channel=channel, task=task)

    def call(self, x: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The model's plain forward, what an exported graph computes: (B, T, S, S) logits."""
        return self.model(x)

    def train_forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training's forward: (B, T, S, S) logits and the predicted IoU ((B, 1), box-prompted models) or ``None``."""
        return self.model(x), None

    def example_inputs(self, batch: int, img_size: int, device: str | torch.device = "cpu"
                       ) -> tuple[torch.Tensor, ...]:
        """Random inputs of :meth:`call` (benchmarks, FLOP counts, export checks): (B, 3, S, S) images in [0, 1]
        that fill the canvas."""
        return (torch.rand(batch, 3, img_size, img_size, device=device),)


class BoxPrompted(PerTarget):
    """The SAM family (``model(x, boxes)``, one output): LiteMedSAM and its students, or an engine running one
    (:class:`medseg.inference.engines.OnnxEngine`). Without boxes, the prompt-free box of the image region."""

    family = "box_prompted"
    accepts_boxes = True

    @property
    def input_names(self) -> list[str]:
        return ["images", "boxes"]

    @property
    def img_size(self) -> int | None:
        size = getattr(self.model, "img_size", None)
        return None if size is None else int(size)

    def region_boxes(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4) the prompt-free box of a full (B, 3, S, S) canvas (:mod:`medseg.data.geometry`)."""
        size = int(x.shape[-1])
        return torch.from_numpy(prompt_free_boxes([square_geometry(size)] * x.shape[0])).to(x.device)

    def logits(self, x: torch.Tensor, *, channel: int = 0, task: int | None = None) -> torch.Tensor:
        if channel:
            raise ValueError("SAM-family models have one output (channel 0)")
        return self.model(x, self.region_boxes(x))

    def window_logits(self, tile: int | None = None, *, channel: int = 0, task: int | None = None) -> Logits:
        """Raises ``ValueError`` for a ``channel`` other than 0 or a ``tile`` other than the encoder's input size."""
        if channel:
            raise ValueError("SAM-family models have one output")
        size = self.img_size or tile or 0
        if tile is not None and tile != size:
            raise ValueError(f"a SAM-family model takes {size}² inputs; use tile={size}")
        return lambda x: self.logits(x)

    def call(self, x: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, self.region_boxes(x) if boxes is None else boxes)

    def train_forward(self, x: torch.Tensor, boxes: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model(x, boxes=boxes, return_iou=True)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, S/4, S/4) image embeddings: encoded once, decoded for any number of boxes (:meth:`decode`)."""
        return self.model.image_encoder(x)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(K, 1, S/4, S/4) low-resolution logits of one image's (1, C, h, w) embedding for (K, 4) canvas boxes."""
        low, _ = self.model.decode(embedding, boxes)
        return low

    def example_inputs(self, batch: int, img_size: int, device: str | torch.device = "cpu"
                       ) -> tuple[torch.Tensor, ...]:
        """Images and their (B, 4) prompt-free boxes."""
        x = torch.rand(batch, 3, img_size, img_size, device=device)
        return x, self.region_boxes(x)


class TaskModel(PerTarget):
    """A task model (ESP-MedSAM): one output, segmented as one of ``tasks`` — given, or chosen per image by its
    classifier on the encoder's shared (task-independent) features."""

    family = "task"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.tasks = model_tasks(model)

    def _task_tensor(self, x: torch.Tensor, task: int | None) -> torch.Tensor | None:
        return None if task is None else torch.full((x.shape[0],), task, dtype=torch.int64, device=x.device)

    def logits(self, x: torch.Tensor, *, channel: int = 0, task: int | None = None) -> torch.Tensor:
        return self.model(x, self._task_tensor(x, task))

    def forward_all(self, x: torch.Tensor, tasks: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
        """The model's :class:`~medseg.models.esp_medsam.EspOutput` (logits, the task used, the classifier's logits,
        the self-patch logits) for (B,) ``tasks`` or the classifier's choice."""
        return self.model.forward_all(x, tasks)

    def task_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) the classifier's task logits for the images (the encoder's shared stages only)."""
        return self.model.classifier(self.model.image_encoder.shared_features(x))


class EmbeddingHead(TaskModel):
    """The prompt-free head (:mod:`medseg.models.prompt_free_head`): a task model that reads a frozen encoder's
    (B, C, S/4, S/4) embeddings instead of images."""

    family = "embedding_head"
    takes_embeddings = True

    def task_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) task logits for (B, C, h, w) embeddings."""
        return self.model.classify(x)

    def example_inputs(self, batch: int, img_size: int, device: str | torch.device = "cpu"
                       ) -> tuple[torch.Tensor, ...]:
        """A random (B, C, S/4, S/4) embedding."""
        channels = self.model.prompt_encoder.embed_dim
        return (torch.randn(batch, channels, img_size // 4, img_size // 4, device=device),)


def adapter_for(model: nn.Module) -> PerTarget:
    """The adapter of ``model``'s family (see the module's table)."""
    if takes_embeddings(model):
        return EmbeddingHead(model)
    if model_tasks(model) is not None:
        return TaskModel(model)
    if accepts_boxes(model):
        return BoxPrompted(model)
    return PerTarget(model)
