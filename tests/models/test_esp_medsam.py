"""ESP-MedSAM's parts: parameter bags gathered per sample (a mixed batch equals each sample alone), prefix attention
against the explicit formula, SPPG targets by max-pooling, QDMD's private query per task, the ablation switches."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model
from medseg.models.esp_medsam import EspMedSam
from medseg.models.modality_controller import BaggedEncoder, ModalityController
from medseg.models.patch_prompt import PatchPromptGenerator, patch_targets
from medseg.models.tiny_vit import Attention, TinyViT
from tests.conftest import tiny_model_config


def _model(**changes) -> EspMedSam:
    torch.manual_seed(0)
    opts = {**tiny_model_config("esp_medsam"), "tasks": ["a", "b", "c"], **changes}
    model = build_model("esp_medsam", **opts)
    with torch.no_grad():  # fresh bags are near-identity; make them differ so the tests can tell them apart
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_mixed_task_batch_equals_each_sample_alone() -> None:
    model = _model()
    x = torch.rand(4, 3, 64, 64)
    task = torch.tensor([2, 0, 1, 2])
    with torch.no_grad():
        together = model(x, task)
        alone = torch.cat([model(x[i:i + 1], task[i:i + 1]) for i in range(4)])
        swapped = model(x, torch.tensor([0, 0, 1, 2]))
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(swapped[0], together[0], atol=1e-4)  # the bag and query really change the result
    torch.testing.assert_close(swapped[1:], together[1:], rtol=1e-4, atol=1e-5)


def test_prefix_attention_matches_the_explicit_formula() -> None:
    torch.manual_seed(0)
    attn = Attention(dim=8, key_dim=4, num_heads=2, resolution=(2, 2))
    with torch.no_grad():
        attn.attention_biases.normal_()
    x, pk, pv = torch.rand(3, 4, 8), torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    q, k, v = attn.qkv(attn.norm(x)).view(3, 4, 2, 12).permute(0, 2, 1, 3).split(4, dim=3)
    k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
    bias = torch.cat([torch.zeros(2, 4, 5), attn.attention_biases[:, attn.attention_bias_idxs]], 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / 2 + bias, dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(3, 4, 8))
    torch.testing.assert_close(attn(x, (pk, pv)), expected)


def test_a_fresh_bag_without_tokens_leaves_the_encoder_unchanged() -> None:
    torch.manual_seed(0)
    enc = TinyViT(img_size=64, embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                  window_sizes=(7, 7, 7, 7)).eval()
    bagged = BaggedEncoder(enc, ModalityController(enc, num_tasks=2, num_tokens=0)).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(bagged(x, torch.tensor([0, 1])), enc(x))  # the bag MLP starts at zero


def test_bag_indices_are_checked() -> None:
    enc = TinyViT(img_size=64, embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                  window_sizes=(7, 7, 7, 7))
    ctrl = ModalityController(enc, num_tasks=2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        ctrl.bags(torch.tensor([0, 2]))


def test_sppg_targets_are_max_pooled_ground_truth() -> None:
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 3, 12] = 1  # one pixel in patch (0, 1) of a 2×2 grid of 8-px patches
    mask[0, 0, 9:16, 0:8] = 1  # patch (1, 0) full
    assert patch_targets(mask, 8)[0, 0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="multiple of the patch size"):
        patch_targets(torch.zeros(1, 1, 20, 20), 8)


def test_sppg_grid_follows_the_patch_size() -> None:
    emb = torch.rand(2, 32, 16, 16)  # a 64² input with a stride-4 embedding
    for patch, grid in ((4, 16), (8, 8), (16, 4)):
        logits, dense = PatchPromptGenerator(embed_dim=32, image_size=64, embedding_size=16, patch_size=patch)(emb)
        assert logits.shape == (2, 1, grid, grid) and dense.shape == emb.shape
    with pytest.raises(ValueError, match="power of two"):
        PatchPromptGenerator(embed_dim=32, image_size=64, embedding_size=16, patch_size=12)


def test_qdmd_each_task_has_its_own_query() -> None:
    model = _model()
    x = torch.rand(2, 3, 64, 64)
    task = torch.tensor([0, 1])
    with torch.no_grad():
        before = model(x, task)
        model.mask_decoder.queries[1].add_(1.0)
        after = model(x, task)
    torch.testing.assert_close(after[0], before[0])  # task 0's sample does not see task 1's query
    assert not torch.allclose(after[1], before[1])


def test_without_a_task_the_classifier_chooses_it() -> None:
    model = _model()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_all(x)
    assert torch.equal(out.task, out.task_logits.argmax(1))
    torch.testing.assert_close(out.logits, model(x, out.task))
    assert model.task_index(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(ValueError, match="unknown task"):
        model.task_index(["d"])


@pytest.mark.parametrize("switch", ["use_bags", "use_sppg", "use_qdmd"])
def test_each_part_can_be_switched_off(switch: str) -> None:
    model = _model(**{switch: False})
    out = model.forward_all(torch.rand(2, 3, 64, 64), torch.tensor([0, 2]))
    assert out.logits.shape == (2, 1, 64, 64) and torch.isfinite(out.logits).all()
    assert (out.patch_logits is None) == (switch == "use_sppg")
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < sum(p.numel() for p in _model().parameters())


def test_sppg_can_encode_its_patch_prompt_with_sams_mask_encoder() -> None:
    """``dense_prompt="sam_mask"``: the patch logits, upsampled to 4× the embedding grid, go through the prompt
    encoder's mask down-scaler (SAM's mask prompt path) and gradients reach it; the SPPG has no DP encoder."""
    model = _model(dense_prompt="sam_mask").train()
    assert model.patch_prompt.dense is None
    assert not any(n.startswith("patch_prompt.dense") for n, _ in model.named_parameters())
    x, task = torch.rand(2, 3, 64, 64), torch.tensor([0, 2])
    out = model.forward_all(x, task)
    side = 4 * out.embedding.shape[-1]
    expect = model.prompt_encoder.mask_downscaling(
        torch.nn.functional.interpolate(out.patch_logits, size=(side, side), mode="bilinear", align_corners=False))
    assert expect.shape == out.embedding.shape
    with torch.no_grad():  # the dense prompt really is that one: a decoder fed it gives the same logits
        low, _ = model.mask_decoder(out.embedding, model.prompt_encoder.get_dense_pe(), expect, task)
    torch.testing.assert_close(torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear",
                                                               align_corners=False), out.logits)
    out.logits.sum().backward()
    assert model.prompt_encoder.mask_downscaling[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="dense_prompt"):
        PatchPromptGenerator(embed_dim=32, image_size=64, embedding_size=16, dense_prompt="other")
