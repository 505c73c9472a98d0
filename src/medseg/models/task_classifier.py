"""The task classifier of a prompt-free task model (ESP-MedSAM, the prompt-free head): which task an image is, from
an encoder's tokens, so that prediction needs neither a prompt nor a modality label. Its head is refitted on frozen
features by :mod:`medseg.training.task_classifier`; predictors read its choice and probability."""

from __future__ import annotations

import torch
from torch import nn


class TaskClassifier(nn.Module):
    """Task from the shared encoder's tokens: mean- and max-pooled tokens → LayerNorm → MLP.

    Shape:
        tokens (B, N, C) → logits (B, num_tasks).
    """

    def __init__(self, *, in_dim: int, num_tasks: int, hidden: int = 128) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.LayerNorm(2 * in_dim), nn.Linear(2 * in_dim, hidden), nn.GELU(),
                                  nn.Linear(hidden, num_tasks))

    @staticmethod
    def pool(tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens → (B, 2C) mean- and max-pooled: the head's input (cached when the head is refitted,
        :mod:`medseg.training.task_classifier`)."""
        return torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(tokens))
