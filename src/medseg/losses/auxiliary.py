"""Auxiliary terms of ESP-MedSAM training: the SPPG patch loss and the task classifier's loss.

Both read model outputs beyond the mask logits, passed to :class:`~medseg.losses.CompositeLoss` as ``aux``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.patch_prompt import patch_targets


class PatchPromptBCE(nn.Module):
    """BCE between SPPG patch logits and the ground truth max-pooled to the patch grid (the paper's Eq. 6).

    Shape:
        patch_logits (B, 1, G, G), target (B, 1, S, S) with S a multiple of G → scalar.
    """

    def forward(self, patch_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        patch = target.shape[-1] // patch_logits.shape[-1]
        return F.binary_cross_entropy_with_logits(patch_logits, patch_targets(target, patch).to(patch_logits.dtype))


class TaskCrossEntropy(nn.Module):
    """Cross-entropy of the task classifier. Shape: task_logits (B, T), task (B,) int64 → scalar."""

    def forward(self, task_logits: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(task_logits, task)
