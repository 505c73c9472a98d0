"""An image encoder run at a lower input resolution than the canvas it serves: the cheap "fast" encoder.

A TinyViT (LiteMedSAM's encoder) costs about the square of its input side: LiteMedSAM's own encoder at 128² instead
of 256² does a quarter of the work (its weights are resolution-free: windowed attention with relative biases, convs).
:class:`ResizedEncoder` wraps such an encoder so that it still takes the canvas (B, 3, S, S) and still returns the
embedding grid the decoders expect (B, C, R, R): the image is resized down (antialiased bilinear) to the encoder's
side, and the encoder's coarser embedding is resized up (bilinear) to R × R. Nothing in it is trained; a head trained
on the full-resolution embedding is fine-tuned on these (``fast:`` in ``configs/universal-cpu.yaml``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResizedEncoder(nn.Module):
    """``encoder`` (built for ``encoder.img_size`` inputs) behind a canvas of ``img_size`` and a grid of ``grid``.

    Args:
        encoder: an image encoder mapping (B, 3, s, s) → (B, C, r, r), exposing ``img_size`` (= s).
        img_size: side S of the canvas this module takes (the letterboxed image), S ≥ s.
        grid: side R of the embedding this module returns (the decoders' grid; LiteMedSAM: S / 4).

    The encoder's input side is also a (persistent, int64) buffer, ``input_side``: it is part of the state, so two
    wrappers of the same weights at different sides have different digests (and embedding caches).

    Shape:
        (B, 3, S, S) float in [0, 1] → (B, C, R, R) float.
    """

    def __init__(self, encoder: nn.Module, *, img_size: int, grid: int) -> None:
        super().__init__()
        side = int(encoder.img_size)  # type: ignore[arg-type]
        if side > img_size or grid < 1:
            raise ValueError(f"ResizedEncoder: the encoder's side {side} must be at most the canvas {img_size}, "
                             f"and the grid positive (got {grid})")
        self.encoder, self.img_size, self.out_resolution = encoder, int(img_size), int(grid)
        self.register_buffer("input_side", torch.tensor([side], dtype=torch.int64))

    @property
    def encoder_side(self) -> int:
        return int(self.encoder.img_size)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"ResizedEncoder expects {self.img_size}×{self.img_size} input, got {tuple(x.shape[-2:])}")
        s = self.encoder_side
        if s != self.img_size:
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        emb = self.encoder(x)
        if emb.shape[-1] != self.out_resolution or emb.shape[-2] != self.out_resolution:
            emb = F.interpolate(emb, size=(self.out_resolution, self.out_resolution), mode="bilinear",
                                align_corners=False)
        return emb
