"""ESP-MedSAM's Self-Patch Prompt Generator (SPPG): patch-level foreground logits predicted from the image
embedding, turned into a dense prompt that is added to the embedding before decoding (no manual prompt).

Patch generator: ``k`` stride-2 convolutions, each followed by LayerNorm (each doubles the patch), then a 1×1
convolution to one channel (the paper's Fig. 2). With an embedding of stride ``e`` pixels (LiteMedSAM: 256 → 64,
e = 4) and patch side ``p`` pixels, ``k = log2(p / e)``; the default ``p`` is image/32 (the paper's choice), 8 px at
256², so one layer and a 32×32 patch grid. Dense-prompt (DP) encoder: the patch probabilities are interpolated
(bilinear) to the embedding grid and a convolution lifts them to the embedding's channels.

``dense_prompt="sam_mask"`` (our option; the paper does not say how its DP encoder starts) has no DP encoder of its
own: the model reads the patch logits as SAM's low-resolution mask prompt, through the prompt encoder's pretrained
mask down-scaler (:class:`medseg.models.esp_medsam.EspMedSam`). The default ``"conv"`` DP encoder starts random, so
at the start of training it hands the pretrained decoder a dense prompt it has never seen in place of SAM's "no
mask" embedding.

Training target: the ground truth max-pooled to the patch grid (:func:`patch_targets`), BCE.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.common import LayerNorm2d


def patch_targets(masks: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 1, S, S) binary masks → (B, 1, S/patch, S/patch) float: 1 where any pixel of the patch is foreground."""
    if masks.shape[-1] % patch or masks.shape[-2] % patch:
        raise ValueError(f"mask size {tuple(masks.shape[-2:])} is not a multiple of the patch size {patch}")
    return F.max_pool2d((masks > 0.5).float(), kernel_size=patch, stride=patch)


class PatchPromptGenerator(nn.Module):
    """SPPG.

    Args:
        embed_dim: channels of the image embedding (256).
        image_size: model input side in pixels (256).
        embedding_size: side of the embedding grid (64).
        patch_size: patch side in pixels; ``None``: ``image_size // 32``.
        dense_prompt: ``"conv"``: the paper's DP encoder (interpolation + convolutions); ``"sam_mask"``: none here,
            the model encodes the patch logits with SAM's mask prompt encoder (``dense`` is ``None``).

    Shape:
        embedding (B, C, R, R) → (patch_logits (B, 1, G, G), dense_prompt (B, C, R, R) or ``None`` with
        ``"sam_mask"``), G = image_size / patch.
    """

    def __init__(self, *, embed_dim: int = 256, image_size: int = 256, embedding_size: int = 64,
                 patch_size: int | None = None, dense_prompt: str = "conv") -> None:
        super().__init__()
        if dense_prompt not in ("conv", "sam_mask"):
            raise ValueError(f"dense_prompt must be 'conv' or 'sam_mask', got {dense_prompt!r}")
        self.patch_size = patch_size or image_size // 32
        stride = image_size // embedding_size
        layers = math.log2(self.patch_size / stride) if self.patch_size >= stride else -1
        if image_size % embedding_size or layers != int(layers) or image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must be the embedding stride {stride} times a power of "
                             f"two and divide the image size {image_size}")
        merge: list[nn.Module] = []
        for _ in range(int(layers)):
            merge += [nn.Conv2d(embed_dim, embed_dim, kernel_size=2, stride=2), LayerNorm2d(embed_dim), nn.GELU()]
        self.merge = nn.Sequential(*merge)
        self.to_logit = nn.Conv2d(embed_dim, 1, kernel_size=1)
        self.embedding_size = embedding_size
        self.dense = (nn.Sequential(nn.Conv2d(1, embed_dim // 4, kernel_size=3, padding=1), nn.GELU(),
                                    nn.Conv2d(embed_dim // 4, embed_dim, kernel_size=1))
                      if dense_prompt == "conv" else None)

    def forward(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.to_logit(self.merge(embedding))
        return logits, (self.encode(torch.sigmoid(logits)) if self.dense is not None else None)

    def encode(self, patch_probs: torch.Tensor) -> torch.Tensor:
        """The DP encoder alone: (B, 1, G, G) probabilities (predicted, or ground truth for a manual patch prompt)
        → (B, C, R, R) dense prompt."""
        if self.dense is None:
            raise RuntimeError("dense_prompt='sam_mask': the model's prompt encoder encodes the patch prompt")
        up = F.interpolate(patch_probs, size=(self.embedding_size, self.embedding_size), mode="bilinear",
                           align_corners=False)
        return self.dense(up)
