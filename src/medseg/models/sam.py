"""The SAM-style composite: image encoder + prompt encoder + mask decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.models.mask_decoder import MaskDecoder
from medseg.models.prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Box-promptable segmenter. Prompt-free use passes each image's own region as its box
    (:func:`medseg.data.geometry.prompt_free_boxes`), the one definition training, prediction and export share.

    Args:
        image_encoder: module mapping (B, 3, S, S) → (B, C, h, w); must expose ``img_size``.
        prompt_encoder: :class:`PromptEncoder` whose ``input_image_size`` is (S, S).
        mask_decoder: :class:`MaskDecoder`.

    Shape:
        images: (B, 3, S, S) float32, per-image min-max normalised to [0, 1], zero-padded bottom/right
            (see :func:`medseg.data.geometry.letterbox_image`).
        boxes: (B, 4) float xyxy in the S×S input frame (required: the model cannot see where the padding
            starts, so there is no implicit default).
        returns logits (B, 1, S, S) (decoder output at 4h×4w, bilinearly resized to S×S when they differ),
        and with ``return_iou`` also the predicted IoU (B, 1).
    """

    predicts_iou = True
    accepts_boxes = True

    def __init__(self, *, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    @property
    def img_size(self) -> int:
        return int(self.image_encoder.img_size)

    def decode(self, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits (B, 1, 4h, 4w) and IoU (B, 1) from cached embeddings and (B, 4) boxes."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes, masks=None)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense,
                                 multimask_output=False)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor,
                return_iou: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if boxes is None:
            raise ValueError("Sam.forward needs boxes; for prompt-free use pass "
                             "medseg.data.geometry.prompt_free_boxes(geometries)")
        emb = self.image_encoder(images)
        logits, iou = self.decode(emb, boxes.reshape(-1, 4).to(emb.dtype))
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, iou) if return_iou else logits
