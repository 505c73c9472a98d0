"""LiteMedSAM's encoder behind a larger canvas (``lite_medsam(encoder_input_size=…)``): same weights, the decoders'
grid, a digest of its own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import MedsegError
from medseg.inference.engines import model_digest, prepare_engine
from medseg.models import build_model
from medseg.models.resized_encoder import ResizedEncoder
from tests.training.test_embedding_data import LITE, tiny_lite_medsam_state


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    full = build_model("lite_medsam", img_size=64, **LITE).eval()
    small = build_model("lite_medsam", img_size=64, encoder_input_size=32, **LITE).eval()
    small.image_encoder.encoder.load_state_dict(full.image_encoder.state_dict())
    return full, small


def test_the_resized_encoder_is_the_same_tinyvit_on_a_resized_image_with_the_decoders_grid() -> None:
    full, small = _pair()
    enc = small.image_encoder
    assert isinstance(enc, ResizedEncoder) and enc.img_size == 64 and enc.encoder_side == 32
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        got = enc(x)
        assert got.shape == full.image_encoder(x).shape == (2, _width(full), 16, 16)
        by_hand = F.interpolate(full.image_encoder.__class__.forward(enc.encoder, F.interpolate(
            x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)), size=(16, 16),
            mode="bilinear", align_corners=False)
        assert torch.allclose(got, by_hand, atol=1e-6)
        # the whole model still takes the canvas and a box in its frame
        logits = small(x, torch.tensor([[0.0, 0.0, 63.0, 63.0]] * 2))
        assert logits.shape == (2, 1, 64, 64)
        # the optimized engine (BN folded, channels-last) agrees
        fused = prepare_engine(small, "optimized", img_size=64)
        assert torch.allclose(fused.image_encoder(x), got, atol=1e-4)
    with pytest.raises(ValueError, match="64×64"):
        enc(torch.rand(1, 3, 32, 32))


def _width(model: torch.nn.Module) -> int:
    """The prompt embedding width (the embedding's channels)."""
    return int(model.prompt_encoder.embed_dim)


def test_the_input_side_is_part_of_the_digest_so_caches_do_not_mix() -> None:
    full, small = _pair()
    other = build_model("lite_medsam", img_size=64, encoder_input_size=48, **LITE).eval()
    other.image_encoder.encoder.load_state_dict(full.image_encoder.state_dict())
    digests = {model_digest(m.image_encoder) for m in (full, small, other)}
    assert len(digests) == 3


def test_pretrained_weights_load_at_any_side_and_bad_sides_are_refused(monkeypatch) -> None:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    full = build_model("lite_medsam", img_size=64, pretrained=True, **LITE)
    small = build_model("lite_medsam", img_size=64, pretrained=True, encoder_input_size=32, **LITE)
    for k, v in full.image_encoder.state_dict().items():
        assert torch.equal(small.image_encoder.encoder.state_dict()[k], v)
    for bad in (128, 30, 0):
        with pytest.raises(MedsegError, match="encoder_input_size"):
            build_model("lite_medsam", img_size=64, encoder_input_size=bad, **LITE)
