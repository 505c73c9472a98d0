"""MONAI's BasicUNet as a medseg model (2-D, one logit channel)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet as _MonaiBasicUNet
from torch import nn


class BasicUNet(nn.Module):
    """Plain U-Net (MONAI ``BasicUNet``, 2-D) returning foreground logits.

    Args:
        in_channels: image channels (3: medseg feeds RGB / grey-repeated images).
        out_channels: logit channels (1 for binary segmentation).
        features: six widths (five encoder levels + the final up-sampling block), MONAI's convention.
        norm: MONAI norm spec; ``"batch"`` or ``"instance"``.
        dropout: dropout rate.

    Shape:
        (B, in_channels, H, W) float in [0, 1], H and W divisible by 16 → (B, out_channels, H, W) logits.
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 1,
                 features: Sequence[int] = (32, 32, 64, 128, 256, 32), norm: str = "instance",
                 dropout: float = 0.0) -> None:
        super().__init__()
        norm_spec = ("instance", {"affine": True}) if norm == "instance" else norm
        self.net = _MonaiBasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                                   features=tuple(features), norm=norm_spec, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
