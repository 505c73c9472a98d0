"""Weight selection (a small TinyViT cut from a large one): exact for equal sizes, head-wise for attention, and a
readable error when the small model does not fit."""

from __future__ import annotations

import pytest
import torch

from medseg.models import build_model
from medseg.models.tiny_vit import Attention, TinyViT
from medseg.models.weight_selection import init_by_selection, select_weights

LARGE = dict(img_size=64, embed_dims=(16, 32, 40, 64), depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
             window_sizes=(7, 7, 7, 7))
SMALL = dict(img_size=64, embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
             window_sizes=(7, 7, 7, 7))


def test_equal_sizes_copy_the_model_exactly() -> None:
    torch.manual_seed(0)
    a, b = TinyViT(**LARGE).eval(), TinyViT(**LARGE).eval()
    init_by_selection(b, a.state_dict())
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(a(x), b(x))


def test_attention_is_cut_head_wise() -> None:
    # the large layer's second head contributes nothing (its output columns are zero): the one-head layer cut
    # from it must compute the same function, which holds only if q, k, v and proj are cut per head
    torch.manual_seed(0)
    large = Attention(dim=8, key_dim=4, num_heads=2, resolution=(3, 3))
    with torch.no_grad():
        large.attention_biases.normal_()
        large.proj.weight[:, 4:] = 0
    small = init_by_selection(Attention(dim=8, key_dim=4, num_heads=1, resolution=(3, 3)), large.state_dict())
    x = torch.rand(2, 9, 8)
    torch.testing.assert_close(small(x), large(x))
    # narrower heads: each of q, k, v keeps its own leading channels
    narrow = Attention(dim=8, key_dim=2, num_heads=1, resolution=(3, 3))
    w = select_weights(narrow, large.state_dict())["qkv.weight"]
    q, k, v = large.qkv.weight[:12].split(4)
    assert torch.equal(w, torch.cat([q[:2], k[:2], v[:2]]))


def test_small_tinyvit_from_large_runs_and_uses_the_first_blocks() -> None:
    torch.manual_seed(0)
    large, small = TinyViT(**LARGE), TinyViT(**SMALL)
    init_by_selection(small, large.state_dict())
    big, mine = large.state_dict(), small.state_dict()
    name = "layers.1.blocks.0.mlp.fc1.weight"
    assert torch.equal(mine[name], big[name][:mine[name].shape[0], :mine[name].shape[1]])
    assert small(torch.rand(1, 3, 64, 64)).shape == (1, 256, 16, 16)


def test_a_model_larger_than_the_source_is_refused() -> None:
    with pytest.raises(ValueError, match=r"each dimension must fit|fewer than"):
        select_weights(TinyViT(**LARGE), TinyViT(**SMALL).state_dict())


def test_student_builder_initialises_its_encoder_from_the_teacher(monkeypatch) -> None:
    teacher_opts = dict(LARGE, prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2)
    torch.manual_seed(0)
    teacher = build_model("lite_medsam", **teacher_opts)
    monkeypatch.setattr("medseg.weights.fetch_weights", lambda name, **kw: teacher.state_dict())
    opts = dict(SMALL, prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2)
    cut = build_model("lite_medsam_student", pretrained=True, **opts)
    rand = build_model("lite_medsam_student", pretrained=True, encoder_init="random", **opts)
    name = "image_encoder.neck.0.weight"
    t = teacher.state_dict()[name]
    assert torch.equal(cut.state_dict()[name], t[:, :32])
    assert not torch.equal(rand.state_dict()[name], t[:, :32])
