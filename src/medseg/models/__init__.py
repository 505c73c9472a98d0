"""Models: the SAM family (TinyViT encoder, prompt encoder, two-way mask decoder) and U-Net baselines.

Every model maps (B, 3, H, W) float images in [0, 1] to (B, 1, H, W) foreground logits; SAM-family models also take
optional (B, 4) boxes and can return their IoU prediction. Build them by name with :func:`build_model`.
"""

from medseg.models import builders as _builders  # noqa: F401  (registers the models)
from medseg.models.builders import load_state_matching, load_state_strict
from medseg.models.mask_decoder import MaskDecoder
from medseg.models.prompt_encoder import PromptEncoder
from medseg.models.registry import (
    ModelEntry,
    build_model,
    builder_options,
    list_models,
    register_model,
    sized_options,
)
from medseg.models.resnet_unet import ResNetUNet
from medseg.models.sam import Sam
from medseg.models.tiny_vit import TinyViT
from medseg.models.transformer import TwoWayTransformer
from medseg.models.unet import BasicUNet
from medseg.models.vit_unet import ViTUNet

__all__ = [
    "BasicUNet", "MaskDecoder", "ModelEntry", "PromptEncoder", "ResNetUNet", "Sam", "TinyViT",
    "TwoWayTransformer", "ViTUNet", "build_model", "builder_options", "list_models", "load_state_matching",
    "load_state_strict",
    "register_model", "sized_options",
]
