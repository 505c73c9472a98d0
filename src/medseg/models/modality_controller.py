"""ESP-MedSAM's modality controller: one *parameter bag* per task, selected per sample inside a batch.

A bag holds, for every attention block of the chosen stages of a :class:`~medseg.models.tiny_vit.TinyViT` (the
"modality aggregator"), learnable key and value prefix tokens (the paper's Eq. 3) and a bottleneck MLP run beside
the block's own MLP on the same normalised tokens (Eq. 4). Bags are stored stacked, ``(tasks, …)``, and gathered with
the batch's task indices, so a batch may mix tasks and there is neither a per-sample Python loop nor one checkpoint
per task. The same module with one bag adapts a frozen teacher encoder (the paper's medical teacher: frozen SAM
encoder + learnable tokens + parallel MLPs).

Our choices where the paper is silent (options of the constructor): bags on stages 2 and 3 only by default, so the
output of stages 0–1 is bag-free and can feed the task classifier without a second pass; 8 tokens per block; MLP
width ¼ of the block's; the MLP's output layer starts at zero (a fresh bag leaves the MLP path unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.tiny_vit import Attention, BlockBag, TinyViT, TinyViTBlock


class ModalityController(nn.Module):
    """Parameter bags for the attention blocks of ``encoder``'s stages ``stages``.

    Args:
        encoder: the TinyViT the bags plug into (only its block sizes are read; it is not stored).
        num_tasks: number of bags.
        num_tokens: prefix tokens per block and bag (0: none).
        mlp_ratio: width of a bag's MLP relative to the block's channels (0: no MLP).
        stages: indices of the stages that get bags (stage 0 is convolutional and never does).

    Shape:
        ``bags(task)`` with task (B,) int64 → per stage, per block, a :class:`BlockBag` gathered for those samples.
    """

    def __init__(self, encoder: TinyViT, *, num_tasks: int, num_tokens: int = 8, mlp_ratio: float = 0.25,
                 stages: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError("num_tasks must be ≥ 1")
        self.num_tasks, self.num_tokens = num_tasks, num_tokens
        self.layout: list[list[int | None]] = []  # stage → block → index into the parameter lists (None: no bag)
        self.prefix_k, self.prefix_v = nn.ParameterList(), nn.ParameterList()
        self.w1, self.b1, self.w2, self.b2 = (nn.ParameterList() for _ in range(4))
        for s, layer in enumerate(encoder.layers):
            row: list[int | None] = []
            for blk in layer.blocks:
                if s not in stages or not isinstance(blk, TinyViTBlock):
                    row.append(None)
                    continue
                row.append(len(self.prefix_k))
                attn: Attention = blk.attn
                dim = attn.qkv.in_features
                shape = (num_tasks, attn.num_heads, num_tokens, attn.key_dim)
                self.prefix_k.append(nn.Parameter(torch.randn(shape) * 0.02))
                self.prefix_v.append(nn.Parameter(torch.randn(shape) * 0.02))
                hidden = max(1, int(dim * mlp_ratio)) if mlp_ratio > 0 else 0
                w1 = torch.empty(num_tasks, dim, hidden)
                nn.init.uniform_(w1, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
                self.w1.append(nn.Parameter(w1))
                self.b1.append(nn.Parameter(torch.zeros(num_tasks, hidden)))
                self.w2.append(nn.Parameter(torch.zeros(num_tasks, hidden, dim)))
                self.b2.append(nn.Parameter(torch.zeros(num_tasks, dim)))
            self.layout.append(row)
        if not len(self.prefix_k):
            raise ValueError(f"no attention block in stages {tuple(stages)} of the encoder")
        self.mlp_ratio = mlp_ratio

    def first_stage(self) -> int:
        """The first stage with a bag (the stages before it are bag-free)."""
        return next(s for s, row in enumerate(self.layout) if any(i is not None for i in row))

    def bags(self, task: torch.Tensor) -> list[list[BlockBag | None] | None]:
        """The bags of ``task`` (B,) gathered per sample, in the layout :meth:`TinyViT.forward` takes."""
        if task.dim() != 1:
            raise ValueError(f"task must be (B,), got {tuple(task.shape)}")
        if task.numel() and (int(task.min()) < 0 or int(task.max()) >= self.num_tasks):
            raise ValueError(f"task indices must lie in [0, {self.num_tasks}), got {task.tolist()}")
        out: list[list[BlockBag | None] | None] = []
        for row in self.layout:
            if all(i is None for i in row):
                out.append(None)
                continue
            out.append([None if i is None else self._bag(i, task) for i in row])
        return out

    def _bag(self, i: int, task: torch.Tensor) -> BlockBag:
        prefix = None
        if self.num_tokens > 0:
            prefix = (self.prefix_k[i][task], self.prefix_v[i][task])
        mlp = None
        if self.mlp_ratio > 0:
            w1, b1, w2, b2 = self.w1[i][task], self.b1[i][task], self.w2[i][task], self.b2[i][task]

            def mlp(y: torch.Tensor) -> torch.Tensor:  # (B, N, C): batched per-sample weights
                hidden = F.gelu(torch.baddbmm(b1.unsqueeze(1), y, w1))
                return torch.baddbmm(b2.unsqueeze(1), hidden, w2)

        return BlockBag(prefix, mlp)


class BaggedEncoder(nn.Module):
    """A TinyViT plus an optional :class:`ModalityController`: the paper's "lightweight semi-parameter sharing image
    encoder" (without a controller: the shared encoder alone, the no-MMDKD ablation).

    Args:
        encoder: the shared TinyViT (modality aggregator).
        controller: the parameter bags, or ``None``.
        shared_stages: stages run before any bag (their output feeds the task classifier); default: up to the
            controller's first bagged stage, or 2 without a controller.

    Shape:
        images (B, 3, S, S), task (B,) int64 or ``None`` (no bag) → embeddings (B, C, R, R).
    """

    def __init__(self, encoder: TinyViT, controller: ModalityController | None, shared_stages: int | None = None
                 ) -> None:
        super().__init__()
        self.encoder, self.controller = encoder, controller
        first = controller.first_stage() if controller is not None else 2
        self.shared_stages = first if shared_stages is None else shared_stages
        if controller is not None and self.shared_stages > first:
            raise ValueError(f"shared_stages {self.shared_stages} runs past the first bagged stage {first}")

    @property
    def img_size(self) -> int:
        return int(self.encoder.img_size)

    def shared_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens after the bag-free stages (input to the task classifier)."""
        return self.encoder.stages(self.encoder.start(images), 0, self.shared_stages)

    def forward(self, images: torch.Tensor, task: torch.Tensor | None = None,
                shared: torch.Tensor | None = None) -> torch.Tensor:
        """``shared``: the output of :meth:`shared_features` for these images, to avoid computing it twice."""
        enc = self.encoder
        x = shared if shared is not None else self.shared_features(images)
        if task is not None and self.controller is not None and self.controller.num_tasks == 1:
            task = torch.zeros_like(task)  # one bag shared by every task (the adapted teacher)
        bags = None if task is None or self.controller is None else self.controller.bags(task)
        return enc.finish(enc.stages(x, self.shared_stages, len(enc.layers), bags))
