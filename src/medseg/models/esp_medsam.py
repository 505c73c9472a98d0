"""ESP-MedSAM (Xu et al.): a prompt-free, task-aware lightweight SAM, plus a task classifier so that prediction needs
neither a prompt nor a modality label.

    image ─► shared stages ─┬─► task classifier ─► task (argmax, unless given)
                            └─► bagged stages (MMDKD: the task's parameter bag) ─► neck ─► embedding h
    h ─► SPPG ─► patch logits, dense prompt p
    (h + p, the task's query) ─► QDMD ─► mask logits (B, 1, S, S)

A *task* is a (modality, target) pair — fundus carries vessels and optic disc — named in ``tasks``. Each part can be
switched off for the paper's ablation: ``use_bags`` (no controller: the shared encoder alone), ``use_sppg`` (SAM's
"no mask" dense embedding instead of the patch prompt), ``use_qdmd`` (one query and MLP for every task).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.modality_controller import BaggedEncoder
from medseg.models.modality_decoder import ModalityDecoder
from medseg.models.patch_prompt import PatchPromptGenerator
from medseg.models.prompt_encoder import PromptEncoder
from medseg.models.task_classifier import TaskClassifier


@dataclass
class EspOutput:
    """Everything one forward pass computes (training needs all of it; prediction the logits and task).

    Attributes:
        logits: (B, 1, S, S) mask logits on the input canvas.
        iou: (B, 1) predicted IoU.
        patch_logits: (B, 1, G, G) SPPG patch logits, or ``None`` without SPPG.
        task_logits: (B, T) classifier logits.
        task: (B,) the task each sample was segmented as (given, or the classifier's argmax).
        embedding: (B, C, R, R) image embedding (for distillation losses).
    """

    logits: torch.Tensor
    iou: torch.Tensor
    patch_logits: torch.Tensor | None
    task_logits: torch.Tensor
    task: torch.Tensor
    embedding: torch.Tensor


def decode_prompt_free(emb: torch.Tensor, task: torch.Tensor, *, prompt_encoder: PromptEncoder,
                       patch_prompt: PatchPromptGenerator | None, mask_decoder: ModalityDecoder, size: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The prompt-free decoding ESP-MedSAM and the frozen-encoder head share: SPPG's dense prompt (or SAM's "no
    mask" embedding without SPPG) and each sample's task query through QDMD.

    Shape:
        emb (B, C, R, R), task (B,) int64 → (logits (B, 1, size, size), iou (B, 1), patch logits (B, 1, G, G) or
        ``None``).
    """
    if patch_prompt is not None:
        patch_logits, dense = patch_prompt(emb)
        if dense is None:  # dense_prompt="sam_mask": the patch logits as SAM's low-resolution mask prompt
            side = 4 * emb.shape[-1]  # SAM's mask input is 4× the embedding grid
            dense = prompt_encoder.mask_downscaling(
                F.interpolate(patch_logits, size=(side, side), mode="bilinear", align_corners=False))
    else:
        patch_logits = None
        dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(emb)
    query = task if mask_decoder.num_tasks > 1 else torch.zeros_like(task)
    low, iou = mask_decoder(emb, prompt_encoder.get_dense_pe(), dense, query)
    logits = low
    if logits.shape[-2:] != (size, size):
        logits = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return logits, iou, patch_logits


class EspMedSam(nn.Module):
    """The composite (see the module docstring).

    Args:
        image_encoder: :class:`BaggedEncoder` (its controller may be ``None``).
        prompt_encoder: SAM prompt encoder; only its positional encoding and "no mask" embedding are used.
        patch_prompt: :class:`PatchPromptGenerator`, or ``None`` (no SPPG).
        mask_decoder: :class:`ModalityDecoder` with one query per task, or one query for all (no QDMD).
        classifier: :class:`TaskClassifier`.
        tasks: task names, index = task id.

    Shape:
        images (B, 3, S, S) float in [0, 1], letterboxed as for LiteMedSAM; task (B,) int64 or ``None``
        → logits (B, 1, S, S) (``forward``) or an :class:`EspOutput` (``forward_all``).
    """

    accepts_boxes = False
    predicts_iou = True

    def __init__(self, *, image_encoder: BaggedEncoder, prompt_encoder: PromptEncoder,
                 patch_prompt: PatchPromptGenerator | None, mask_decoder: ModalityDecoder,
                 classifier: TaskClassifier, tasks: list[str]) -> None:
        super().__init__()
        if len(set(tasks)) != len(tasks) or not tasks:
            raise ValueError(f"tasks must be distinct names, got {tasks}")
        self.image_encoder, self.prompt_encoder = image_encoder, prompt_encoder
        self.patch_prompt, self.mask_decoder, self.classifier = patch_prompt, mask_decoder, classifier
        self.tasks = list(tasks)

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    def task_index(self, names: list[str]) -> torch.Tensor:
        """Task names → (B,) int64 ids (a :class:`ValueError` lists the known tasks for an unknown name)."""
        unknown = sorted(set(names) - set(self.tasks))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model knows {self.tasks}")
        return torch.tensor([self.tasks.index(n) for n in names], dtype=torch.int64)

    def forward_all(self, images: torch.Tensor, task: torch.Tensor | None = None) -> EspOutput:
        shared = self.image_encoder.shared_features(images)
        task_logits = self.classifier(shared)
        if task is None:
            task = task_logits.argmax(dim=1)
        task = task.to(images.device)
        emb = self.image_encoder(images, task, shared=shared)
        logits, iou, patch_logits = decode_prompt_free(emb, task, prompt_encoder=self.prompt_encoder,
                                                       patch_prompt=self.patch_prompt, mask_decoder=self.mask_decoder,
                                                       size=images.shape[-1])
        return EspOutput(logits, iou, patch_logits, task_logits, task, emb)

    def forward(self, images: torch.Tensor, task: torch.Tensor | None = None,
                return_iou: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.forward_all(images, task)
        return (out.logits, out.iou) if return_iou else out.logits
