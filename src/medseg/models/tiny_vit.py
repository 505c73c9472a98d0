"""TinyViT image encoder in the LiteMedSAM configuration.

Architecture-compatible with the encoder of ``lite_medsam.pth`` (parameter names match, so the checkpoint loads
with strict key matching). The structure follows TinyViT (Wu et al., ECCV 2022) as adapted by MobileSAM and
LiteMedSAM: a convolutional patch embedding, one MBConv stage, three windowed-attention stages with a depth-wise
"local" convolution between attention and MLP, and SAM's 256-channel neck.

Differences to the reference code, all behaviour-preserving: sizes are constructor arguments instead of the
hard-coded ``view(B, 64, 64, C)`` / "stride 1 if out_dim in (320, 448, 576)" rules; the attention bias is indexed in
``forward`` (no train()-time cache buffer); no timm dependency.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.common import DropPath, LayerNorm2d


class Conv2dBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (keys ``c`` and ``bn`` as in the checkpoint)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False))
        bn = nn.BatchNorm2d(out_ch)
        nn.init.constant_(bn.weight, bn_weight_init)
        nn.init.zeros_(bn.bias)
        self.add_module("bn", bn)


class PatchEmbed(nn.Module):
    """Two Conv-BN layers with GELU. LiteMedSAM uses 1×1 kernels at stride 1 (MobileSAM: 3×3, stride 2)."""

    def __init__(self, *, in_chans: int, embed_dim: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.seq = nn.Sequential(
            Conv2dBN(in_chans, embed_dim // 2, kernel_size, stride, pad),
            nn.GELU(),
            Conv2dBN(embed_dim // 2, embed_dim, kernel_size, stride, pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, 3×3 depth-wise, 1×1 project, residual, GELU. (B, C, H, W) → same."""

    def __init__(self, *, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = Conv2dBN(dim, hidden, 1)
        self.act1 = nn.GELU()
        self.conv2 = Conv2dBN(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = Conv2dBN(hidden, dim, 1, bn_weight_init=0.0)
        self.act3 = nn.GELU()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.act3(x + self.drop_path(self.conv3(y)))


class PatchMerging(nn.Module):
    """Conv downsampling between stages: (B, C, H, W) or (B, H·W, C) → (B, H'·W', C_out)."""

    def __init__(self, *, input_resolution: tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.act = nn.GELU()
        self.conv1 = Conv2dBN(dim, out_dim, 1)
        self.conv2 = Conv2dBN(out_dim, out_dim, 3, stride, 1, groups=out_dim)
        self.conv3 = Conv2dBN(out_dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a learned relative-position bias over a ``resolution`` window.

    Shape:
        (B, N, dim) → (B, N, dim), N = resolution[0] · resolution[1].
    """

    def __init__(self, *, dim: int, key_dim: int, num_heads: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.scale = key_dim**-0.5
        inner = key_dim * num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)
        points = list(itertools.product(range(resolution[0]), range(resolution[1])))
        offsets: dict[tuple[int, int], int] = {}
        idxs = []
        for p1 in points:
            for p2 in points:
                off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
                idxs.append(offsets.setdefault(off, len(offsets)))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs).view(len(points), len(points)),
                             persistent=False)

    def forward(self, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``prefix``: learnable key and value tokens, each (B, heads, P, key_dim), put before the keys and values
        (prefix tuning: every query may attend to them; they carry no position bias)."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.key_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.key_dim, dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)
        if prefix is not None:
            pk, pv = prefix
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
            bias = torch.cat([bias.new_zeros(bias.shape[0], n, pk.shape[2]), bias], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyViTBlock(nn.Module):
    """Window attention → depth-wise local conv → MLP, each with a residual. (B, H·W, C) → same."""

    def __init__(self, *, dim: int, input_resolution: tuple[int, int], num_heads: int, window_size: int,
                 mlp_ratio: float, drop_path: float, local_conv_size: int = 3) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.input_resolution = input_resolution
        self.window_size = window_size
        self.attn = Attention(dim=dim, key_dim=dim // num_heads, num_heads=num_heads,
                              resolution=(window_size, window_size))
        hidden = int(dim * mlp_ratio)
        self.mlp = _TokenMLP(dim=dim, hidden=hidden)
        self.local_conv = Conv2dBN(dim, dim, local_conv_size, 1, local_conv_size // 2, groups=dim)
        self.drop_path = DropPath(drop_path)

    def _window_attention(self, x: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        h, w = self.input_resolution
        b, n, c = x.shape
        ws = self.window_size
        if h == ws and w == ws:
            return self.attn(x, prefix)
        x = x.view(b, h, w, c)
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        ph, pw = h + pad_b, w + pad_r
        nh, nw = ph // ws, pw // ws
        x = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        if prefix is not None:  # each window of a sample sees that sample's tokens
            prefix = (prefix[0].repeat_interleave(nh * nw, dim=0), prefix[1].repeat_interleave(nh * nw, dim=0))
        x = self.attn(x, prefix)
        x = x.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, ph, pw, c)
        return x[:, :h, :w].reshape(b, n, c)

    def forward(self, x: torch.Tensor, bag: BlockBag | None = None) -> torch.Tensor:
        """``bag``: per-sample prefix tokens for the attention and an MLP run beside the block's own on the same
        normalised input (ESP-MedSAM's parameter bags, :mod:`medseg.models.modality_controller`)."""
        h, w = self.input_resolution
        b, n, c = x.shape
        if n != h * w:
            raise ValueError(f"expected {h}×{w} tokens, got {n}")
        x = x + self.drop_path(self._window_attention(x, None if bag is None else bag.prefix))
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        if bag is None or bag.mlp is None:
            return x + self.drop_path(self.mlp(x))
        y = self.mlp.norm(x)
        return x + self.drop_path(self.mlp.fc2(F.gelu(self.mlp.fc1(y))) + bag.mlp(y))


@dataclass(frozen=True)
class BlockBag:
    """What one parameter bag gives one :class:`TinyViTBlock`, already gathered per sample.

    Attributes:
        prefix: key and value tokens, each (B, heads, P, key_dim), or ``None``.
        mlp: (B, N, C) → (B, N, C), the bag's MLP applied to the block's normalised tokens, or ``None``.
    """

    prefix: tuple[torch.Tensor, torch.Tensor] | None
    mlp: Callable[[torch.Tensor], torch.Tensor] | None


class _TokenMLP(nn.Module):
    """Pre-norm MLP (keys ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class Stage(nn.Module):
    """A list of ``blocks`` followed by an optional ``downsample`` (PatchMerging)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, bags: Sequence[BlockBag | None] | None = None) -> torch.Tensor:
        """``bags``: one entry per block (attention blocks only; ``None`` = the block as it is)."""
        for i, blk in enumerate(self.blocks):
            x = blk(x, bags[i]) if bags is not None and bags[i] is not None else blk(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """TinyViT encoder + SAM neck.

    Args:
        img_size: square input side (the attention windows and token grids are fixed by it).
        in_chans: input channels.
        embed_dims, depths, num_heads, window_sizes: per-stage sizes (stage 0 is convolutional; its heads and window
            are ignored).
        downsample_strides: stride of the PatchMerging after stages 0…n-2 (LiteMedSAM: 2, 2, 1).
        patch_kernel, patch_stride: patch-embedding conv kernel and stride (LiteMedSAM: 1, 1).
        out_chans: channels of the neck output.

    Shape:
        (B, in_chans, img_size, img_size) float, min-max normalised to [0, 1]
        → (B, out_chans, R, R) with R = img_size / (patch_stride² · Π downsample_strides) (LiteMedSAM: 256 → 64).
    """

    def __init__(self, *, img_size: int = 256, in_chans: int = 3, embed_dims: Sequence[int] = (64, 128, 160, 320),
                 depths: Sequence[int] = (2, 2, 6, 2), num_heads: Sequence[int] = (2, 4, 5, 10),
                 window_sizes: Sequence[int] = (7, 7, 14, 7), downsample_strides: Sequence[int] = (2, 2, 1),
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 patch_kernel: int = 1, patch_stride: int = 1, out_chans: int = 256) -> None:
        super().__init__()
        n = len(depths)
        if not (len(embed_dims) == len(num_heads) == len(window_sizes) == n and len(downsample_strides) == n - 1):
            raise ValueError("embed_dims, depths, num_heads, window_sizes need one entry per stage and "
                             "downsample_strides one fewer")
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans=in_chans, embed_dim=embed_dims[0], kernel_size=patch_kernel,
                                      stride=patch_stride)
        res = img_size // (patch_stride**2)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        layers: list[nn.Module] = []
        for i in range(n):
            rates = dpr[sum(depths[:i]):sum(depths[:i + 1])]
            down = None
            if i < n - 1:
                down = PatchMerging(input_resolution=(res, res), dim=embed_dims[i], out_dim=embed_dims[i + 1],
                                    stride=downsample_strides[i])
            if i == 0:
                blocks: list[nn.Module] = [MBConv(dim=embed_dims[0], expand_ratio=mbconv_expand_ratio, drop_path=r)
                                           for r in rates]
            else:
                blocks = [TinyViTBlock(dim=embed_dims[i], input_resolution=(res, res), num_heads=num_heads[i],
                                       window_size=window_sizes[i], mlp_ratio=mlp_ratio, drop_path=r)
                          for r in rates]
            layers.append(Stage(blocks, down))
            if i < n - 1:
                res = (res - 1) // downsample_strides[i] + 1
        self.layers = nn.ModuleList(layers)
        self.out_resolution = res
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, bags: Sequence[Sequence[BlockBag | None] | None] | None = None
                ) -> torch.Tensor:
        """``bags``: per stage, per block (see :class:`BlockBag`); ``None``: the plain encoder."""
        return self.finish(self.stages(self.start(x), 0, len(self.layers), bags))

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding: (B, in_chans, S, S) → (B, embed_dims[0], S', S') (stage 0 is convolutional; the
        PatchMerging after it turns maps into (B, N, C) tokens)."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"TinyViT expects {self.img_size}×{self.img_size} input, got {tuple(x.shape[-2:])}")
        return self.patch_embed(x)

    def stages(self, x: torch.Tensor, first: int, stop: int,
               bags: Sequence[Sequence[BlockBag | None] | None] | None = None) -> torch.Tensor:
        """Stages ``first … stop − 1`` on tokens (a forward pass can be split, e.g. to read a stage's output)."""
        for i in range(first, stop):
            x = self.layers[i](x, None if bags is None else bags[i])
        return x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The neck: last-stage tokens → (B, out_chans, R, R)."""
        b, _, c = x.shape
        r = self.out_resolution
        return self.neck(x.view(b, r, r, c).permute(0, 3, 1, 2))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
