"""ESP-MedSAM's Query-Decoupled Modality Decoder (QDMD): SAM's two-way mask decoder with one query token and one
hypernetwork MLP per task (the paper's one-to-one, class-fixed assignment), batched over mixed-task batches.

The two-way transformer, the upscaling path and the IoU head are shared; each sample's query and MLP are gathered
by its task index. No sparse prompt: the tokens are the IoU token and the sample's query; the dense prompt (SPPG's)
is added to the image embedding as in SAM. Built from a :class:`MaskDecoder`, every task's query and MLP start as
that decoder's single-mask token and MLP (LiteMedSAM's, when it is loaded).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.mask_decoder import MaskDecoder


class ModalityDecoder(nn.Module):
    """QDMD.

    Args:
        base: the SAM mask decoder whose transformer, upscaling and IoU head are reused (and whose single-mask
            token / hypernetwork MLP initialise every task's).
        num_tasks: number of tasks (queries).

    Shape:
        image_embedding (B, C, h, w), image_pe (1, C, h, w), dense (B, C, h, w), task (B,) int64
        → masks (B, 1, 4h, 4w) logits, iou (B, 1).
    """

    def __init__(self, base: MaskDecoder, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError("num_tasks must be ≥ 1")
        self.transformer = base.transformer
        self.output_upscaling = base.output_upscaling
        self.iou_prediction_head = base.iou_prediction_head
        self.iou_token = base.iou_token
        self.num_tasks = num_tasks
        self.queries = nn.Parameter(base.mask_tokens.weight[0].detach().clone().repeat(num_tasks, 1))
        mlp = base.output_hypernetworks_mlps[0]
        self.hyper_w = nn.ParameterList(nn.Parameter(layer.weight.detach().t().clone().repeat(num_tasks, 1, 1))
                                        for layer in mlp.layers)  # each (tasks, in, out)
        self.hyper_b = nn.ParameterList(nn.Parameter(layer.bias.detach().clone().repeat(num_tasks, 1))
                                        for layer in mlp.layers)  # each (tasks, out)

    def hypernetwork(self, tokens: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """(B, C) query outputs → (B, C/8) mask weights, each sample through its task's MLP (ReLU between)."""
        x = tokens.unsqueeze(1)
        for i, (w, b) in enumerate(zip(self.hyper_w, self.hyper_b, strict=True)):
            x = torch.baddbmm(b[task].unsqueeze(1), x, w[task])
            if i < len(self.hyper_w) - 1:
                x = F.relu(x)
        return x.squeeze(1)

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor, dense: torch.Tensor,
                task: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = image_embedding.shape[0]
        if task.shape != (b,):
            raise ValueError(f"task must be ({b},), got {tuple(task.shape)}")
        tokens = torch.stack([self.iou_token.weight[0].expand(b, -1), self.queries[task]], dim=1)  # (B, 2, C)
        src = image_embedding + dense
        pos = image_pe.expand(b, -1, -1, -1) if image_pe.shape[0] == 1 else image_pe
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        weights = self.hypernetwork(hs[:, 1], task)  # (B, C/8)
        _, c2, h2, w2 = upscaled.shape
        masks = torch.bmm(weights.unsqueeze(1), upscaled.view(b, c2, h2 * w2)).view(b, 1, h2, w2)
        iou = self.iou_prediction_head(hs[:, 0])[:, :1]
        return masks, iou
