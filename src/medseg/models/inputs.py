"""Example inputs for a model (benchmarks, FLOP counts, export checks)."""

from __future__ import annotations

import torch
from torch import nn

from medseg.data.geometry import prompt_free_boxes, square_geometry
from medseg.models.parts import accepts_boxes, takes_embeddings


def example_inputs(model: nn.Module, batch: int, img_size: int, device: str | torch.device = "cpu"
                   ) -> tuple[torch.Tensor, ...]:
    """Random (B, 3, S, S) float32 images in [0, 1] that fill the canvas, plus their (B, 4) prompt-free boxes
    for SAM-family models (from :mod:`medseg.data.geometry`, like every other path); for a model that reads a frozen
    encoder's embeddings (``takes_embeddings``), a random (B, C, S/4, S/4) embedding."""
    if takes_embeddings(model):
        channels = model.prompt_encoder.embed_dim
        return (torch.randn(batch, channels, img_size // 4, img_size // 4, device=device),)
    x = torch.rand(batch, 3, img_size, img_size, device=device)
    if accepts_boxes(model):
        boxes = prompt_free_boxes([square_geometry(img_size)] * batch)
        return x, torch.from_numpy(boxes).to(device)
    return (x,)
