"""What a model is, asked one way: its named encoder (``encoder_prefix``), whether it is a task model, whether it
takes box prompts (the SAM family) and whether it reads a frozen encoder's embeddings instead of images.

A *task model* (ESP-MedSAM, the prompt-free head) has one output that it segments as one of its ``tasks``, chosen by
its classifier or given (``model(x, task)``); every other model has one output channel per target. Training,
distillation, prediction, sliding windows, serving and model folders ask through these functions.
"""

from __future__ import annotations

from torch import nn

from medseg.models.registry import builder_options


def encoder_prefix(model: nn.Module) -> str:
    """The name of ``model``'s encoder submodule (the class attribute ``encoder_prefix``: ``resnet_unet``:
    ``encoder``; ``vit_unet``: ``net.vit``).

    Raises:
        ValueError: the model does not name one (only encoder–decoder models can be pre-trained this way).
    """
    prefix = getattr(model, "encoder_prefix", None)
    if not isinstance(prefix, str):
        raise ValueError(f"{type(model).__name__} does not name its encoder (no encoder_prefix): self-supervised "
                         "pre-training and encoder-only transfer need resnet_unet or vit_unet")
    return prefix


def model_tasks(model: nn.Module) -> list[str] | None:
    """A task model's task names in output order; ``None`` for a model with one output per target."""
    tasks = getattr(model, "tasks", None)
    return None if tasks is None else list(tasks)


def is_task_model(model: nn.Module | str) -> bool:
    """Whether a built model, or the registered builder ``name`` (its ``tasks`` option), is a task model."""
    if isinstance(model, str):
        return "tasks" in builder_options(model)
    return model_tasks(model) is not None


def accepts_boxes(model: nn.Module) -> bool:
    """Whether ``model(images, boxes=…)`` takes box prompts (the SAM family: LiteMedSAM, its students)."""
    return bool(getattr(model, "accepts_boxes", False))


def takes_embeddings(model: nn.Module) -> bool:
    """Whether the model reads a frozen encoder's (B, C, S/4, S/4) embeddings instead of images (the prompt-free
    head, trained on :mod:`medseg.training.embedding_cache`)."""
    return bool(getattr(model, "takes_embeddings", False))
