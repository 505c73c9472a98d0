"""Every registered model: forward/backward at test scale; SAM-family parts against hand-written references."""

from __future__ import annotations

import pytest
import torch

from medseg.data.geometry import letterbox_geometry, prompt_free_boxes
from medseg.errors import MedsegError
from medseg.models import Sam, build_model, list_models, load_state_strict
from medseg.models.adapters import adapter_for
from medseg.models.esp_medsam import EspMedSam
from medseg.models.prompt_encoder import PositionEmbeddingRandom
from medseg.models.prompt_free_head import PromptFreeHead
from medseg.models.tiny_vit import Attention
from tests.conftest import SHARED_WEIGHTS, TINY_CONFIGS, requires_shared_weights, tiny_model_config


def test_registry_lists_every_model() -> None:
    assert {m.name for m in list_models()} == set(TINY_CONFIGS) == {"lite_medsam", "lite_medsam_student", "esp_medsam",
                                                                     "esp_medsam_teacher", "prompt_free_head",
                                                                     "basic_unet", "resnet_unet", "vit_unet",
                                                                     "ensemble"}


@requires_shared_weights
def test_student_takes_lite_medsams_prompt_encoder_and_decoder() -> None:
    student = build_model("lite_medsam_student", pretrained=str(SHARED_WEIGHTS))
    teacher = build_model("lite_medsam", pretrained=str(SHARED_WEIGHTS))
    s, t = student.state_dict(), teacher.state_dict()
    shared = [k for k in t if not k.startswith("image_encoder.")]
    assert shared and all(torch.equal(s[k], t[k]) for k in shared)
    assert student.image_encoder(torch.rand(1, 3, 256, 256)).shape == (1, 256, 64, 64)
    n = sum(p.numel() for p in student.image_encoder.parameters())
    assert n < 0.3 * sum(p.numel() for p in teacher.image_encoder.parameters())


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_forward_backward_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, **tiny_model_config(name))
    logits = model(*adapter_for(model).example_inputs(2, 64))
    assert logits.shape == (2, 1, 64, 64) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    # SAM-family models have structurally unused parameters (point/mask prompt paths, multimask heads), which
    # is why DDP training switches on find_unused_parameters for them; everything in the encoder must learn.
    # ESP-MedSAM: the task classifier is trained by its own loss (the mask loss passes through its argmax).
    # The prompt-free head has no encoder: its self-patch prompt generator must learn from the mask.
    scope = (model.image_encoder if isinstance(model, (Sam, EspMedSam)) else
             model.patch_prompt if isinstance(model, PromptFreeHead) else model)
    missing = [n for n, p in scope.named_parameters() if p.grad is None]
    assert not missing


def test_unknown_model_and_bad_option_name_the_problem() -> None:
    with pytest.raises(MedsegError, match=r"unknown model 'nope'.*basic_unet"):
        build_model("nope")
    with pytest.raises(MedsegError, match="basic_unet"):
        build_model("basic_unet", widths=3)


def test_sam_needs_boxes_and_the_prompt_free_box_comes_from_geometry() -> None:
    torch.manual_seed(0)
    model: Sam = build_model("lite_medsam", **tiny_model_config("lite_medsam")).eval()
    x = torch.rand(2, 3, 64, 64)
    with pytest.raises(ValueError, match="prompt_free_boxes"):
        model(x, None)
    geos = [letterbox_geometry((64, 64), 64), letterbox_geometry((30, 64), 64)]
    boxes = torch.from_numpy(prompt_free_boxes(geos))
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 63.0, 63.0], [0.0, 0.0, 63.0, 29.0]]))
    with torch.inference_mode():
        a, iou = model(x, boxes, return_iou=True)
        c = model(x, torch.tensor([[10.0, 10.0, 30.0, 30.0]] * 2))
    assert iou.shape == (2, 1)
    assert not torch.allclose(a, c)


def test_window_attention_matches_explicit_softmax() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=16, key_dim=8, num_heads=2, resolution=(3, 3))
    torch.nn.init.normal_(attn.attention_biases)
    x = torch.randn(4, 9, 16)
    qkv = attn.qkv(attn.norm(x)).view(4, 9, 2, 24).permute(0, 2, 1, 3)
    q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16:]
    bias = attn.attention_biases[:, attn.attention_bias_idxs]
    w = torch.softmax(q @ k.transpose(-2, -1) * 8**-0.5 + bias, dim=-1)
    ref = attn.proj((w @ v).transpose(1, 2).reshape(4, 9, 16))
    torch.testing.assert_close(attn(x), ref, rtol=1e-5, atol=1e-5)
    # relative-position bias: same offset → same bias index, and (0,0) offset on the diagonal
    idx = attn.attention_bias_idxs
    assert idx.shape == (9, 9) and bool((idx.diagonal() == idx[0, 0]).all())


def test_positional_encoding_hand_case() -> None:
    pe = PositionEmbeddingRandom(num_pos_feats=2)
    pe.positional_encoding_gaussian_matrix.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    out = pe.forward_with_coords(torch.tensor([[[32.0, 16.0]]]), (64, 64))  # (x, y) = (0.5, 0.25) normalised
    c = torch.tensor([0.0, -0.5]) * 2 * torch.pi
    torch.testing.assert_close(out[0, 0], torch.cat([torch.sin(c), torch.cos(c)]))


def test_strict_loading_reports_mismatches() -> None:
    model = build_model("basic_unet", **tiny_model_config("basic_unet"))
    state = model.state_dict()
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(MedsegError, match=r"missing .*unexpected .*extra\.weight"):
        load_state_strict(model, state, "my.safetensors")


@pytest.mark.slow
@requires_shared_weights
def test_lite_medsam_loads_strictly_and_segments_a_box() -> None:
    model = build_model("lite_medsam", pretrained=SHARED_WEIGHTS).eval()
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 9.79) < 0.01
    # a bright disc on a dark background, prompted with its box, must be segmented
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    disc = ((yy - 128) ** 2 + (xx - 120) ** 2 <= 50**2).float()
    x = (0.2 + 0.6 * disc).expand(1, 3, 256, 256).contiguous()
    with torch.inference_mode():
        logits = model(x, torch.tensor([[65.0, 73.0, 175.0, 183.0]]))
    pred = logits[0, 0] > 0
    dice = 2 * (pred & (disc > 0)).sum() / (pred.sum() + disc.sum())
    assert dice > 0.9


@pytest.mark.parametrize("name", ["lite_medsam", "resnet_unet"])
def test_conv_bn_folding_preserves_outputs(name: str) -> None:
    from medseg.models.fuse import fuse_conv_bn

    torch.manual_seed(0)
    model = build_model(name, **tiny_model_config(name))
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(*adapter_for(model).example_inputs(4, 64))
    model.eval()
    fused = fuse_conv_bn(model)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert n_bn < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = adapter_for(model).example_inputs(2, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fused(*x), model(*x), rtol=1e-4, atol=1e-4)
