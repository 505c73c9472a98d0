"""Inference-time folding of BatchNorm into the preceding convolution (a pure re-parametrisation)."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv computing ``bn(conv(x))`` with BatchNorm's running statistics (eval-mode semantics)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode).to(conv.weight)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def fuse_conv_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every ``Conv2d`` directly followed by ``BatchNorm2d`` inside an ``nn.Sequential`` (TinyViT's
    ``Conv2dBN``, the ResNet stems/decoders). Returns an eval-mode model; use it for inference only."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in itertools.pairwise(names):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                module._modules[a] = fold_conv_bn(conv, bn)
                module._modules[b] = nn.Identity()
    return model
