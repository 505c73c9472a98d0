"""The prompt-free head of a frozen encoder: LiteMedSAM's pretrained prompt encoder and mask decoder made
prompt-free the ESP-MedSAM way (a self-patch dense prompt, one decoder query per task) plus a task classifier, all
reading the frozen encoder's image embedding — so it trains on cached embeddings
(:mod:`medseg.training.embedding_cache`) without one encoder pass per step.

    embedding h ─┬─► task classifier (pooled tokens) ─► task (argmax, unless given)
                 └─► SPPG ─► dense prompt; (h + prompt, the task's query) ─► QDMD ─► mask logits (B, 1, S, S)

Without parameter bags (they live inside the encoder and need its backward pass). The attribute names are
ESP-MedSAM's (:class:`medseg.models.esp_medsam.EspMedSam`), so an ESP-MedSAM student can start its decoder from a
trained head (``model.init_mode: shared``).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.esp_medsam import EspOutput, decode_prompt_free
from medseg.models.modality_decoder import ModalityDecoder
from medseg.models.patch_prompt import PatchPromptGenerator
from medseg.models.prompt_encoder import PromptEncoder
from medseg.models.task_classifier import TaskClassifier


class PromptFreeHead(nn.Module):
    """The head (see the module docstring).

    Args:
        prompt_encoder: SAM prompt encoder (positional encoding; mask down-scaler with ``dense_prompt="sam_mask"``).
        patch_prompt: :class:`PatchPromptGenerator`, or ``None`` (SAM's "no mask" embedding).
        mask_decoder: :class:`ModalityDecoder` with one query per task.
        classifier: :class:`TaskClassifier` over the embedding's tokens.
        tasks: task names, index = task id.
        img_size: side S of the canvas the embedding was computed from (the logits' size).

    Shape:
        embedding (B, C, R, R) float (the frozen encoder's output for a letterboxed (B, 3, S, S) image in [0, 1]);
        task (B,) int64 or ``None`` → logits (B, 1, S, S) (``forward``) or an :class:`EspOutput` (``forward_all``).
    """

    accepts_boxes = False
    predicts_iou = True
    takes_embeddings = True

    def __init__(self, *, prompt_encoder: PromptEncoder, patch_prompt: PatchPromptGenerator | None,
                 mask_decoder: ModalityDecoder, classifier: TaskClassifier, tasks: list[str], img_size: int) -> None:
        super().__init__()
        if len(set(tasks)) != len(tasks) or not tasks:
            raise ValueError(f"tasks must be distinct names, got {tasks}")
        self.prompt_encoder, self.patch_prompt = prompt_encoder, patch_prompt
        self.mask_decoder, self.classifier = mask_decoder, classifier
        self.tasks, self.img_size = list(tasks), img_size

    def task_index(self, names: list[str]) -> torch.Tensor:
        """Task names → (B,) int64 ids (a :class:`ValueError` lists the known tasks for an unknown name)."""
        unknown = sorted(set(names) - set(self.tasks))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model knows {self.tasks}")
        return torch.tensor([self.tasks.index(n) for n in names], dtype=torch.int64)

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """(B, C, R, R) → (B, T) task logits."""
        return self.classifier(embedding.flatten(2).transpose(1, 2))

    def forward_all(self, embedding: torch.Tensor, task: torch.Tensor | None = None) -> EspOutput:
        task_logits = self.classify(embedding)
        if task is None:
            task = task_logits.argmax(dim=1)
        task = task.to(embedding.device)
        logits, iou, patch_logits = decode_prompt_free(embedding, task, prompt_encoder=self.prompt_encoder,
                                                       patch_prompt=self.patch_prompt,
                                                       mask_decoder=self.mask_decoder, size=self.img_size)
        return EspOutput(logits, iou, patch_logits, task_logits, task, embedding)

    def forward(self, embedding: torch.Tensor, task: torch.Tensor | None = None,
                return_iou: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_all(embedding, task)
        return (out.logits, out.iou) if return_iou else out.logits


def student_options(model: nn.Module) -> dict[str, object]:
    """The builder options of an ESP-MedSAM student that decodes as ``model`` (a head or a student) does:
    ``use_sppg`` and SPPG's ``dense_prompt`` (``sam_mask``: the patch logits go through SAM's mask prompt encoder,
    the head's default; ``conv``: ESP-MedSAM's own DP encoder, the student's default)."""
    sppg = getattr(model, "patch_prompt", None)
    if sppg is None:
        return {"use_sppg": False}
    return {"use_sppg": True, "dense_prompt": "sam_mask" if sppg.dense is None else "conv"}


def graft_head(head: PromptFreeHead, student: nn.Module) -> list[str]:
    """Start an ESP-MedSAM student's decoder from a trained head: copy every tensor of ``head`` whose name and shape
    the student shares (prompt encoder, SPPG, QDMD with its per-task queries; the task classifier's parts that match)
    into ``student`` in place.

    Args:
        head: a trained :class:`PromptFreeHead`.
        student: an :class:`~medseg.models.esp_medsam.EspMedSam` with the same tasks in the same order (the per-task
            queries are indexed by task) and the head's SPPG (:func:`student_options`).

    Returns:
        The names of the head's tensors the student has no place for (e.g. a classifier reading another width).

    Raises:
        ValueError: the task lists or the SPPGs differ (both are named).
    """
    tasks = list(getattr(student, "tasks", []))
    if tasks != head.tasks:
        raise ValueError(f"the head's tasks {head.tasks} are not the student's {tasks} (same names, same order)")
    theirs = student_options(student)  # type: ignore[arg-type]
    if theirs != student_options(head):
        raise ValueError(f"the head's SPPG ({student_options(head)}) is not the student's ({theirs}): build the "
                         "student with the head's options")
    from medseg.models.builders import load_state_matching

    state = head.state_dict()
    left = load_state_matching(student, state)
    if len(left) == len(state):
        raise ValueError(f"no tensor of the head fits {type(student).__name__}")
    return left
