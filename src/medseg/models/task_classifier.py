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


def mean_of_heads(heads: list[nn.Sequential]) -> nn.Sequential:
    """K classifier heads (LayerNorm → Linear → GELU → Linear, as :class:`TaskClassifier` builds them, same input and
    task count) folded into one head whose logits are the mean of theirs, exactly: each LayerNorm's affine goes into
    its first Linear (W·(γ ⊙ x̂ + β) + b = (W diag γ)·x̂ + (W β + b)), the first Linears stack into one of K·hidden
    units, and the second ones sit side by side, scaled by 1 / K. The result is a plain head of hidden width
    K·hidden (``TaskClassifier(hidden=K·hidden)`` loads it).

    Shape:
        each head (B, 2C) → (B, T); the folded head (B, 2C) → (B, T), the mean of the K.

    Raises:
        ValueError: no heads, or heads of different input or output width.
    """
    if not heads:
        raise ValueError("mean_of_heads: no heads")
    norms, firsts, lasts = [h[0] for h in heads], [h[1] for h in heads], [h[3] for h in heads]
    if len({n.normalized_shape for n in norms}) != 1 or len({lin.out_features for lin in lasts}) != 1:
        raise ValueError("mean_of_heads: the heads differ in input or task count")
    k = len(heads)
    with torch.no_grad():
        w1 = torch.cat([lin.weight * n.weight[None] for lin, n in zip(firsts, norms, strict=True)])
        b1 = torch.cat([lin.weight @ n.bias + lin.bias for lin, n in zip(firsts, norms, strict=True)])
        w2 = torch.cat([lin.weight for lin in lasts], dim=1) / k
        b2 = torch.stack([lin.bias for lin in lasts]).mean(0)
        folded = nn.Sequential(nn.LayerNorm(norms[0].normalized_shape, eps=norms[0].eps),
                               nn.Linear(w1.shape[1], w1.shape[0]), nn.GELU(), nn.Linear(w2.shape[1], w2.shape[0]))
        folded[1].weight.copy_(w1)
        folded[1].bias.copy_(b1)
        folded[3].weight.copy_(w2)
        folded[3].bias.copy_(b2)
    return folded.to(w1.device, w1.dtype).eval()
