"""SAM prompt encoder (points, boxes, low-resolution masks) with random-Fourier positional encoding."""

from __future__ import annotations

import math

import torch
from torch import nn

from medseg.models.common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (Tancik et al. 2020), as in SAM.

    The Gaussian matrix is a persistent buffer (``positional_encoding_gaussian_matrix``, shape (2, F)).
    """

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates in [0, 1] (..., 2) → (..., 2F)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix.to(coords.dtype)
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an (h, w) grid of pixel centres → (2F, h, w)."""
        h, w = size
        m = self.positional_encoding_gaussian_matrix
        y = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
        x = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
        grid = torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)  # (h, w, 2) as (x, y)
        return self._encode(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (B, N, 2) as (x, y) in an image of ``image_size`` (H, W) → (B, N, 2F)."""
        c = coords.clone().float()
        c[..., 0] = c[..., 0] / image_size[1]
        c[..., 1] = c[..., 1] / image_size[0]
        return self._encode(c)


class PromptEncoder(nn.Module):
    """Encodes prompts for SAM's mask decoder.

    Args:
        embed_dim: prompt embedding width (256).
        image_embedding_size: (h, w) of the image-encoder output.
        input_image_size: (H, W) of the padded model input, the frame of point/box coordinates.
        mask_in_chans: hidden channels of the mask down-scaler.

    Shape:
        points: ((B, N, 2) float xy in input pixels, (B, N) int labels 1 = fg, 0 = bg, -1 = padding) or None.
        boxes: (B, 4) or (B, 1, 4) float xyxy in input pixels, or None.
        masks: (B, 1, 4h, 4w) logits or None.
        returns sparse (B, N', embed_dim) and dense (B, embed_dim, h, w) embeddings.
    """

    def __init__(self, *, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
                 input_image_size: tuple[int, int] = (256, 256), mask_in_chans: int = 16) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))  # pos, neg, box tl, br
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid, (1, embed_dim, h, w)."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros((points.shape[0], 1, 2))], dim=1)
            labels = torch.cat([labels, -labels.new_ones((labels.shape[0], 1))], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels.unsqueeze(-1)
        emb = torch.where(lab == -1, self.not_a_point_embed.weight, emb)
        emb = emb + (lab == 0) * self.point_embeddings[0].weight + (lab == 1) * self.point_embeddings[1].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0)
        return emb + corner_embed

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None = None, boxes: torch.Tensor | None = None,
                masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self._embed_points(points[0], points[1], pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
