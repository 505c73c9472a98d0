"""The encoder of a segmentation model as an ``images → vector`` backbone for self-supervised pre-training.

A model names its encoder with the class attribute ``encoder_prefix`` (``resnet_unet``: ``encoder``; ``vit_unet``:
``net.vit``). The backbone pools the encoder's last output: global average over the deepest ResNet feature map, mean
over the ViT's tokens. Pre-training changes the encoder's weights in place, so the whole segmentation model (with its
untouched decoder) is what a pre-training saves, and encoder-only transfer loads the ``encoder_prefix`` tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.parts import encoder_prefix


class Backbone(nn.Module):
    """``model``'s encoder (shared, not copied) followed by global pooling.

    Shape:
        (B, C, S, S) → (B, D) with D = :attr:`dim`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.get_submodule(encoder_prefix(model))
        self.dim = self._probe_dim(model)

    def _probe_dim(self, model: nn.Module) -> int:
        channels = getattr(self.encoder, "out_channels", None)
        if channels:  # ResNetEncoder: the deepest level
            return int(channels[-1])
        hidden = getattr(getattr(self.encoder, "norm", None), "normalized_shape", None)
        if hidden:  # MONAI ViT: the final LayerNorm's width
            return int(hidden[0])
        raise ValueError(f"cannot tell the feature width of {type(self.encoder).__name__}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.encoder(images)
        if isinstance(out, list):  # ResNet pyramid
            return out[-1].mean(dim=(2, 3))
        if isinstance(out, tuple):  # MONAI ViT: (tokens (B, N, D), hidden states)
            return out[0].mean(dim=1)
        raise TypeError(f"unexpected encoder output {type(out).__name__}")
