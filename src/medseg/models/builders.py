"""Sizes of the registered models, in one place (cf. SAM's ``build_sam.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.models.ensemble import LogitEnsemble
from medseg.models.mask_decoder import MaskDecoder
from medseg.models.prompt_encoder import PromptEncoder
from medseg.models.registry import build_model, register_model
from medseg.models.resized_encoder import ResizedEncoder
from medseg.models.resnet_unet import ResNetUNet
from medseg.models.sam import Sam
from medseg.models.tiny_vit import TinyViT
from medseg.models.transformer import TwoWayTransformer
from medseg.models.unet import BasicUNet
from medseg.models.vit_unet import ViTUNet


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """``load_state_dict(strict=True)`` with a readable error naming ``source`` and the first mismatches."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise MedsegError(f"{source}: weights do not match the model: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}, shape mismatch {shapes[:3]}")
    model.load_state_dict(state, strict=True)
    return model


def load_state_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load every tensor of ``state`` whose name and shape ``model`` shares (the others keep their initialisation);
    returns the names of ``state``'s tensors that were not loaded. Loading nothing is not checked here."""
    own = model.state_dict()
    common = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(common, strict=False)
    return sorted(set(state) - set(common))


@register_model("lite_medsam", "LiteMedSAM: TinyViT-5M encoder + SAM prompt encoder and mask decoder (256²)")
def lite_medsam(*, pretrained: bool | str | Path = False, img_size: int = 256,
                embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] = (7, 7, 14, 7),
                prompt_embed_dim: int = 256, decoder_mlp_dim: int = 2048, decoder_heads: int = 8,
                drop_path_rate: float = 0.0, weights: str = "lite_medsam", cache_dir: str | None = None,
                weights_sha256: str | None = None, encoder_input_size: int | None = None) -> Sam:
    """LiteMedSAM (TinyViT-5M + SAM decoder); ``pretrained=True`` loads the registered weights named ``weights``
    (:func:`medseg.weights.fetch_weights`: local file, ``$MEDSEG_WEIGHTS``, cache or pip), a path loads that file
    (hash-checked against the published weights, or against ``weights_sha256`` for your own checkpoint). Smaller
    sizes give test-scale models of the same design.

    ``encoder_input_size``: run the TinyViT at this smaller side (same weights) behind the ``img_size`` canvas and
    resize its embedding up to the decoder's grid (:class:`medseg.models.resized_encoder.ResizedEncoder`): about
    (``encoder_input_size`` / ``img_size``)² of the encoder's work; ``None``: at ``img_size``."""
    side = img_size if encoder_input_size is None else int(encoder_input_size)
    if not 0 < side <= img_size or side % 4:
        raise MedsegError(f"lite_medsam: encoder_input_size must be a multiple of 4 in (0, {img_size}], got {side}")
    encoder = TinyViT(img_size=side, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                      window_sizes=window_sizes, drop_path_rate=drop_path_rate, out_chans=prompt_embed_dim)
    grid = encoder.out_resolution if side == img_size else ((img_size - 1) // 2) // 2 + 1  # stride 4, as TinyViT
    prompt, decoder = _sam_prompt_and_decoder(img_size, grid, prompt_embed_dim, decoder_mlp_dim, decoder_heads)
    model = Sam(image_encoder=encoder, prompt_encoder=prompt, mask_decoder=decoder)
    if pretrained:
        from medseg.weights import fetch_weights

        path = None if pretrained is True else pretrained
        state = fetch_weights(weights, path=path, cache_dir=cache_dir, sha256=weights_sha256)
        load_state_strict(model, state, str(path or weights))  # the TinyViT's tensors do not depend on its side
    if side != img_size:
        model.image_encoder = ResizedEncoder(encoder, img_size=img_size, grid=grid)
    return model


def _sam_prompt_and_decoder(img_size: int, grid: int, dim: int, mlp_dim: int, heads: int
                            ) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and mask decoder (LiteMedSAM's sizes by default) for a ``grid``² embedding."""
    prompt = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(img_size, img_size))
    decoder = MaskDecoder(transformer_dim=dim,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=heads, mlp_dim=mlp_dim),
                          num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=dim)
    return prompt, decoder


def _load_prompt_and_decoder(model: nn.Module, pretrained: bool | str | Path, *, weights: str = "lite_medsam",
                             cache_dir: str | None = None, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Fill ``model.prompt_encoder`` and ``model.mask_decoder`` from LiteMedSAM's checkpoint (hash-checked,
    strict); returns the whole state dict (the image encoder's tensors for those who want them)."""
    from medseg.weights import fetch_weights

    path = None if pretrained is True else pretrained
    state = fetch_weights(weights, path=path, cache_dir=cache_dir, sha256=sha256)
    parts = {k: v for k, v in state.items() if not k.startswith("image_encoder.")}
    load_state_strict(_Parts(model), parts, str(path or weights))  # fills the model's own modules
    return state


STUDENT_ENCODER: dict[str, tuple[int, ...]] = dict(embed_dims=(32, 64, 128, 160), depths=(1, 1, 2, 1),
                                                  num_heads=(1, 2, 4, 5), window_sizes=(7, 7, 14, 7))
"""The distilled encoder of CMMC / ESP-MedSAM (our design: LiteMedSAM's TinyViT halved in width and depth)."""


@register_model("lite_medsam_student", "LiteMedSAM with a distilled half-width/half-depth TinyViT encoder (256²)")
def lite_medsam_student(*, pretrained: bool | str | Path = False, img_size: int = 256,
                        embed_dims: Sequence[int] = STUDENT_ENCODER["embed_dims"],
                        depths: Sequence[int] = STUDENT_ENCODER["depths"],
                        num_heads: Sequence[int] = STUDENT_ENCODER["num_heads"],
                        window_sizes: Sequence[int] = STUDENT_ENCODER["window_sizes"],
                        prompt_embed_dim: int = 256, decoder_mlp_dim: int = 2048, decoder_heads: int = 8,
                        drop_path_rate: float = 0.0, cache_dir: str | None = None,
                        encoder_init: Literal["random", "weight_selection"] = "weight_selection") -> Sam:
    """A lighter TinyViT image encoder (to be distilled from LiteMedSAM's, :mod:`medseg.distill`) joined to
    LiteMedSAM's prompt encoder and mask decoder. ``pretrained=True`` (or a LiteMedSAM checkpoint path) loads the
    prompt encoder and mask decoder from the LiteMedSAM weights (hash-checked) and initialises the encoder by
    ``encoder_init``: ``"weight_selection"`` cuts LiteMedSAM's encoder to the student's width and depth
    (:mod:`medseg.models.weight_selection`), ``"random"`` leaves it as initialised. Without ``pretrained`` every
    part stays random."""
    model = lite_medsam(img_size=img_size, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                        window_sizes=window_sizes, prompt_embed_dim=prompt_embed_dim, decoder_mlp_dim=decoder_mlp_dim,
                        decoder_heads=decoder_heads, drop_path_rate=drop_path_rate)
    if pretrained:
        state = _load_prompt_and_decoder(model, pretrained, cache_dir=cache_dir)
        if encoder_init == "weight_selection":
            from medseg.models.weight_selection import init_by_selection

            prefix = "image_encoder."
            init_by_selection(model.image_encoder,
                              {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        elif encoder_init != "random":
            raise MedsegError(f"encoder_init must be 'random' or 'weight_selection', got {encoder_init!r}")
    return model


@register_model("esp_medsam", "ESP-MedSAM: student encoder + per-task parameter bags, SPPG, QDMD, task classifier")
def esp_medsam(*, tasks: Sequence[str] = ("task",), pretrained: bool | str | Path = False, img_size: int = 256,
               embed_dims: Sequence[int] = STUDENT_ENCODER["embed_dims"],
               depths: Sequence[int] = STUDENT_ENCODER["depths"],
               num_heads: Sequence[int] = STUDENT_ENCODER["num_heads"],
               window_sizes: Sequence[int] = STUDENT_ENCODER["window_sizes"], prompt_embed_dim: int = 256,
               decoder_mlp_dim: int = 2048, decoder_heads: int = 8, use_bags: bool = True, use_sppg: bool = True,
               use_qdmd: bool = True, bag_tokens: int = 8, bag_mlp_ratio: float = 0.25,
               bag_stages: Sequence[int] = (2, 3), patch_size: int | None = None, classifier_hidden: int = 128,
               shared_bag: bool = False, cache_dir: str | None = None,
               encoder_init: Literal["random", "weight_selection"] = "weight_selection",
               dense_prompt: Literal["conv", "sam_mask"] = "conv") -> nn.Module:
    """ESP-MedSAM (:mod:`medseg.models.esp_medsam`) on the ``lite_medsam_student`` encoder. ``pretrained`` loads
    LiteMedSAM's prompt encoder and decoder (every task's query and hypernetwork start from its single-mask ones) and
    initialises the encoder by ``encoder_init``; a distilled encoder comes in through ``model.init`` instead.
    ``shared_bag``: one parameter bag for every task (the adapted teacher's). ``dense_prompt``: SPPG's dense-prompt
    encoder, the paper's convolutions (``"conv"``) or SAM's pretrained mask prompt encoder (``"sam_mask"``; see
    :mod:`medseg.models.patch_prompt`)."""
    from medseg.models.esp_medsam import EspMedSam
    from medseg.models.modality_controller import BaggedEncoder, ModalityController
    from medseg.models.modality_decoder import ModalityDecoder
    from medseg.models.patch_prompt import PatchPromptGenerator
    from medseg.models.task_classifier import TaskClassifier

    base = lite_medsam_student(pretrained=pretrained, img_size=img_size, embed_dims=embed_dims, depths=depths,
                               num_heads=num_heads, window_sizes=window_sizes, prompt_embed_dim=prompt_embed_dim,
                               decoder_mlp_dim=decoder_mlp_dim, decoder_heads=decoder_heads, cache_dir=cache_dir,
                               encoder_init=encoder_init)
    tasks = list(tasks)
    enc: TinyViT = base.image_encoder  # type: ignore[assignment]
    controller = (ModalityController(enc, num_tasks=1 if shared_bag else len(tasks), num_tokens=bag_tokens,
                                     mlp_ratio=bag_mlp_ratio, stages=bag_stages) if use_bags else None)
    bagged = BaggedEncoder(enc, controller, shared_stages=None if use_bags else min(bag_stages))
    r = enc.out_resolution
    return EspMedSam(
        image_encoder=bagged, prompt_encoder=base.prompt_encoder,
        patch_prompt=(PatchPromptGenerator(embed_dim=prompt_embed_dim, image_size=img_size, embedding_size=r,
                                           patch_size=patch_size, dense_prompt=dense_prompt) if use_sppg else None),
        mask_decoder=ModalityDecoder(base.mask_decoder, num_tasks=len(tasks) if use_qdmd else 1),
        classifier=TaskClassifier(in_dim=embed_dims[bagged.shared_stages], num_tasks=len(tasks),
                                  hidden=classifier_hidden),
        tasks=tasks)


LITE_MEDSAM_ENCODER: dict[str, tuple[int, ...]] = dict(embed_dims=(64, 128, 160, 320), depths=(2, 2, 6, 2),
                                                      num_heads=(2, 4, 5, 10), window_sizes=(7, 7, 14, 7))
"""LiteMedSAM's TinyViT sizes (the teacher's)."""


@register_model("esp_medsam_teacher", "ESP-MedSAM's adapted teacher: LiteMedSAM's encoder + one shared bag, SPPG, QDMD")
def esp_medsam_teacher(*, tasks: Sequence[str] = ("task",), pretrained: bool | str | Path = False,
                       img_size: int = 256, **options: object) -> nn.Module:
    """The paper's multi-modal teacher on LiteMedSAM: its whole encoder (``pretrained``: copied exactly) with one
    learnable parameter bag shared by every task (prefix tokens + parallel MLPs), SPPG and QDMD. Train it with
    ``model.freeze: [image_encoder.encoder]`` (the paper freezes the foundation encoder). Other options as
    :func:`esp_medsam`."""
    sizes = {**LITE_MEDSAM_ENCODER, **{k: v for k, v in options.items() if k in LITE_MEDSAM_ENCODER}}
    rest = {k: v for k, v in options.items() if k not in LITE_MEDSAM_ENCODER}
    return esp_medsam(tasks=tasks, pretrained=pretrained, img_size=img_size, shared_bag=True,
                      **sizes, **rest)  # type: ignore[arg-type]


@register_model("prompt_free_head", "Prompt-free head of a frozen LiteMedSAM encoder: SPPG, a query per task, task "
                                    "classifier (trains on cached embeddings)")
def prompt_free_head(*, tasks: Sequence[str] = ("task",), pretrained: bool | str | Path = False, img_size: int = 256,
                     prompt_embed_dim: int = 256, decoder_mlp_dim: int = 2048, decoder_heads: int = 8,
                     use_sppg: bool = True, patch_size: int | None = None, classifier_hidden: int = 128,
                     dense_prompt: Literal["conv", "sam_mask"] = "sam_mask", weights: str = "lite_medsam",
                     cache_dir: str | None = None, weights_sha256: str | None = None) -> nn.Module:
    """:class:`medseg.models.prompt_free_head.PromptFreeHead` over LiteMedSAM's embedding (``img_size / 4`` grid of
    ``prompt_embed_dim`` channels). ``pretrained`` loads LiteMedSAM's prompt encoder and mask decoder (every task's
    query and hypernetwork start from its single-mask ones), as :func:`lite_medsam` resolves it. ``dense_prompt``
    defaults to ``"sam_mask"``: the patch logits go through SAM's pretrained mask prompt encoder, so the pretrained
    decoder sees a prompt it knows from the first step (the ESP-MedSAM ablation's ``sppg_sam_mask`` variant led the
    paper's fresh DP encoder on validation, 0.361 vs 0.287)."""
    from medseg.models.modality_decoder import ModalityDecoder
    from medseg.models.patch_prompt import PatchPromptGenerator
    from medseg.models.prompt_free_head import PromptFreeHead
    from medseg.models.task_classifier import TaskClassifier

    r = img_size // 4  # LiteMedSAM's TinyViT: stride 4
    prompt, decoder = _sam_prompt_and_decoder(img_size, r, prompt_embed_dim, decoder_mlp_dim, decoder_heads)
    if pretrained:
        sam_parts = nn.Module()
        sam_parts.prompt_encoder, sam_parts.mask_decoder = prompt, decoder
        _load_prompt_and_decoder(sam_parts, pretrained, weights=weights, cache_dir=cache_dir, sha256=weights_sha256)
    tasks = list(tasks)
    return PromptFreeHead(
        prompt_encoder=prompt,
        patch_prompt=(PatchPromptGenerator(embed_dim=prompt_embed_dim, image_size=img_size, embedding_size=r,
                                           patch_size=patch_size, dense_prompt=dense_prompt) if use_sppg else None),
        mask_decoder=ModalityDecoder(decoder, num_tasks=len(tasks)),
        classifier=TaskClassifier(in_dim=prompt_embed_dim, num_tasks=len(tasks), hidden=classifier_hidden),
        tasks=tasks, img_size=img_size)


class _Parts(nn.Module):
    """The prompt encoder and mask decoder of a :class:`Sam` (for a strict partial load with a readable error)."""

    def __init__(self, sam: nn.Module) -> None:
        super().__init__()
        self.prompt_encoder, self.mask_decoder = sam.prompt_encoder, sam.mask_decoder


@register_model("basic_unet", "MONAI BasicUNet (2-D), features (32, 32, 64, 128, 256, 32)")
def basic_unet(*, in_channels: int = 3, out_channels: int = 1, features: Sequence[int] = (32, 32, 64, 128, 256, 32),
               norm: str = "instance", dropout: float = 0.0) -> BasicUNet:
    """MONAI BasicUNet."""
    return BasicUNet(in_channels=in_channels, out_channels=out_channels, features=features, norm=norm,
                     dropout=dropout)


@register_model("resnet_unet", "U-Net, ResNet-50 encoder, scSE decoder attention (MedSASS CNN)")
def resnet_unet(*, arch: str = "resnet50", in_channels: int = 3, out_channels: int = 1, encoder_depth: int = 5,
                decoder_channels: Sequence[int] = (256, 128, 64, 32, 16), base_width: int = 64,
                attention: str | None = "scse") -> ResNetUNet:
    """ResNet encoder + scSE U-Net decoder."""
    return ResNetUNet(arch=arch, in_channels=in_channels, out_channels=out_channels, encoder_depth=encoder_depth,
                      decoder_channels=decoder_channels, base_width=base_width, attention=attention)


@register_model("vit_unet", "U-Net with a ViT-small/16 encoder (MONAI UNETR sizes 384/6/1536)")
def vit_unet(*, img_size: int = 256, in_channels: int = 3, out_channels: int = 1, hidden_size: int = 384,
             mlp_dim: int = 1536, num_heads: int = 6, feature_size: int = 16, dropout: float = 0.0) -> ViTUNet:
    """ViT-small encoder U-Net."""
    return ViTUNet(img_size=img_size, in_channels=in_channels, out_channels=out_channels, hidden_size=hidden_size,
                   mlp_dim=mlp_dim, num_heads=num_heads, feature_size=feature_size, dropout=dropout)


@register_model("ensemble", "Mean logits of member models with the same input and outputs (e.g. specialists trained "
                            "with different augmentation)")
def ensemble(*, members: Sequence[dict[str, Any]]) -> LogitEnsemble:
    """:class:`LogitEnsemble` of ``members``, each ``{"name": builder, "options": {…}}`` as in a ``model.json``."""
    bad = [m for m in members if not isinstance(m, dict) or "name" not in m]
    if bad:
        raise MedsegError(f"ensemble members must be {{'name': …, 'options': …}}; got {bad[0]!r}")
    return LogitEnsemble([build_model(m["name"], **m.get("options", {})) for m in members])
