"""U-Net with a ResNet encoder and scSE attention in the decoder (the MedSASS CNN set-up).

Matches the usual ``segmentation_models_pytorch.Unet(encoder_name="resnet50", decoder_attention_type="scse")``
layout — encoder strides 2, 4, 8, 16, 32; decoder blocks of "upsample ×2 → concat skip → scSE → 2× conv-BN-ReLU →
scSE" — written here without torchvision or timm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RESNET_LAYERS: dict[str, tuple[str, tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = _shortcut(in_ch, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.downsample(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = _shortcut(in_ch, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + self.downsample(x))


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))


class ResNetEncoder(nn.Module):
    """ResNet feature pyramid.

    Shape:
        (B, C, H, W) → list of ``depth`` maps at strides 2, 4, 8, 16, 32 (first ``depth`` of them).
    """

    def __init__(self, *, arch: str = "resnet50", in_channels: int = 3, depth: int = 5, base_width: int = 64) -> None:
        super().__init__()
        if arch not in RESNET_LAYERS:
            raise ValueError(f"unknown ResNet {arch!r}; choose from {sorted(RESNET_LAYERS)}")
        if not 1 <= depth <= 5:
            raise ValueError("encoder depth must be 1…5")
        kind, layers = RESNET_LAYERS[arch]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base_width, 7, 2, 3, bias=False),
                                  nn.BatchNorm2d(base_width), nn.ReLU(inplace=True))
        self.out_channels = [base_width]
        stages = []
        in_ch = base_width
        for i, n in enumerate(layers[:depth - 1]):
            width = base_width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(in_ch, width, 2 if (j == 0 and i > 0) else 1))
                in_ch = width * block.expansion
            stages.append(nn.Sequential(*blocks))
            self.out_channels.append(in_ch)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        y = feats[0]
        for i, stage in enumerate(self.stages):
            y = stage(F.max_pool2d(y, 3, 2, 1) if i == 0 else y)
            feats.append(y)
        return feats


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (Roy et al. 2018). (B, C, H, W) → same."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.cse = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cse(x) + x * self.sse(x)


class DecoderBlock(nn.Module):
    """Upsample ×2, concatenate the skip, attention, two conv-BN-ReLU, attention."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, attention: bool) -> None:
        super().__init__()
        self.attention1 = SCSE(in_ch + skip_ch) if attention and skip_ch else nn.Identity()
        self.conv1 = _conv_bn_relu(in_ch + skip_ch, out_ch)
        self.conv2 = _conv_bn_relu(out_ch, out_ch)
        self.attention2 = SCSE(out_ch) if attention else nn.Identity()

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = self.attention1(torch.cat([x, skip], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


def _conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class ResNetUNet(nn.Module):
    """U-Net with a ResNet encoder and (optionally) scSE decoder attention.

    Args:
        arch: ``resnet18`` | ``resnet34`` | ``resnet50``.
        in_channels, out_channels: image channels and logit channels.
        encoder_depth: encoder levels used (3…5); the MedSASS/DEDL set-up uses 3 with decoder (256, 128, 64).
        decoder_channels: one width per decoder block (``encoder_depth`` entries).
        base_width: stem width (64 for the standard ResNet; smaller for tests).
        attention: ``"scse"`` or ``None``.

    Shape:
        (B, in_channels, H, W) float in [0, 1], H and W divisible by 2**encoder_depth → (B, out_channels, H, W).
    """

    #: the submodule that is the encoder (self-supervised pre-training, encoder-only transfer)
    encoder_prefix = "encoder"

    def __init__(self, *, arch: str = "resnet50", in_channels: int = 3, out_channels: int = 1,
                 encoder_depth: int = 5, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
                 base_width: int = 64, attention: str | None = "scse") -> None:
        super().__init__()
        if len(decoder_channels) != encoder_depth:
            raise ValueError("decoder_channels needs one width per encoder level")
        if attention not in ("scse", None):
            raise ValueError(f"attention must be 'scse' or None, got {attention!r}")
        self.encoder = ResNetEncoder(arch=arch, in_channels=in_channels, depth=encoder_depth, base_width=base_width)
        enc = self.encoder.out_channels[::-1]  # deepest first
        skips = [*enc[1:], 0]
        ins = [enc[0], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o, attention == "scse")
                                    for i, s, o in zip(ins, skips, decoder_channels, strict=True))
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)[::-1]
        y = feats[0]
        skips = [*feats[1:], None]
        for block, skip in zip(self.blocks, skips, strict=True):
            y = block(y, skip)
        return self.head(y)
