"""U-Net with a ViT-small encoder (MONAI UNETR with ViT-S/16 sizes), the MedSASS transformer set-up."""

from __future__ import annotations

import torch
from monai.networks.nets import UNETR
from torch import nn


class ViTUNet(nn.Module):
    """UNETR-style U-Net: a 12-layer ViT encoder (patch 16) whose layers 3/6/9/12 feed a convolutional decoder.

    Defaults are ViT-small (hidden 384, 6 heads, MLP 1536), the encoder MedSASS uses.

    Args:
        img_size: square input side, divisible by 16 (the position embedding is fixed by it).
        in_channels, out_channels: image channels and logit channels.
        hidden_size, mlp_dim, num_heads: ViT width.
        feature_size: width of the convolutional decoder's first level.

    Shape:
        (B, in_channels, img_size, img_size) float in [0, 1] → (B, out_channels, img_size, img_size) logits.
    """

    #: the submodule that is the encoder (the ViT; UNETR's ``encoder1-4`` are convolutional skip paths of the decoder)
    encoder_prefix = "net.vit"

    def __init__(self, *, img_size: int = 256, in_channels: int = 3, out_channels: int = 1, hidden_size: int = 384,
                 mlp_dim: int = 1536, num_heads: int = 6, feature_size: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        if img_size % 16:
            raise ValueError(f"img_size must be divisible by the patch size 16, got {img_size}")
        self.img_size = img_size
        self.net = UNETR(in_channels=in_channels, out_channels=out_channels, img_size=(img_size, img_size),
                         feature_size=feature_size, hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads,
                         norm_name="instance", dropout_rate=dropout, spatial_dims=2, qkv_bias=True)
        # MONAI's TransformerBlock always creates a cross-attention LayerNorm that UNETR never calls; drop it so
        # every parameter receives a gradient (DDP without find_unused_parameters, clean optimiser state).
        for block in self.net.vit.blocks:
            if not getattr(block, "with_cross_attention", False) and hasattr(block, "norm_cross_attn"):
                del block.norm_cross_attn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"ViTUNet expects {self.img_size}×{self.img_size} input, got {tuple(x.shape[-2:])}")
        return self.net(x)
