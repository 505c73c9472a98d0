"""SAM mask decoder: output tokens + two-way transformer + hypernetwork heads."""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.common import MLP, LayerNorm2d
from medseg.models.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts masks and their IoU from image and prompt embeddings.

    Args:
        transformer_dim: token / image-embedding width (256).
        transformer: the :class:`TwoWayTransformer`.
        num_multimask_outputs: masks predicted for ambiguous prompts (3); one more token gives the single mask.
        iou_head_depth, iou_head_hidden_dim: size of the IoU-prediction MLP.

    Shape:
        image_embeddings (B or 1, C, h, w), image_pe (1, C, h, w), sparse (B, N, C), dense (B, C, h, w)
        → masks (B, M, 4h, 4w) logits, iou_pred (B, M), M = 1 (single mask) or ``num_multimask_outputs``.
    """

    def __init__(self, *, transformer_dim: int = 256, transformer: TwoWayTransformer, num_multimask_outputs: int = 3,
                 iou_head_depth: int = 3, iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(input_dim=transformer_dim, hidden_dim=transformer_dim, output_dim=transformer_dim // 8, num_layers=3)
            for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(input_dim=transformer_dim, hidden_dim=iou_head_hidden_dim,
                                       output_dim=self.num_mask_tokens, num_layers=iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor,
                dense_prompt_embeddings: torch.Tensor, multimask_output: bool = False) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe, sparse_prompt_embeddings,
                                             dense_prompt_embeddings)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sl], iou_pred[:, sl]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor,
                      dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``num_mask_tokens`` masks and IoU predictions."""
        b = sparse.shape[0]
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(b, -1, -1), sparse], dim=1)
        src = image_embeddings
        if src.shape[0] != b:
            src = torch.repeat_interleave(src, b // src.shape[0], dim=0)
        src = src + dense
        pos = image_pe.expand(b, -1, -1, -1) if image_pe.shape[0] == 1 else image_pe
        _, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :]) for i, mlp in
                                enumerate(self.output_hypernetworks_mlps)], dim=1)
        _, c2, h2, w2 = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c2, h2 * w2)).view(b, -1, h2, w2)
        return masks, self.iou_prediction_head(iou_token_out)
