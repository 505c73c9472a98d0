"""Shared fixtures. Real-data tests use ``../shared/data`` and skip with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"

requires_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "README.md").is_file(),
    reason=f"real benchmark data not found at {SHARED_DATA} (only present next to the medseg checkout)",
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_blob_mask(rng: np.random.Generator, size: int = 64, n: int = 2) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    m = np.zeros((size, size), bool)
    for _ in range(n):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(3, size / 3, 2)
        m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return m


SHARED_WEIGHTS = SHARED / "weights" / "lite_medsam.pth"
requires_shared_weights = pytest.mark.skipif(
    not SHARED_WEIGHTS.is_file(),
    reason=f"LiteMedSAM checkpoint not found at {SHARED_WEIGHTS} (only present next to the medseg checkout)",
)


# Test-scale variants of every registered model (the registry test checks that each has one).
TINY_CONFIGS: dict[str, dict[str, object]] = {
    "lite_medsam": dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4),
                        window_sizes=(7, 7, 7, 7), prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2),
    "esp_medsam": dict(tasks=("xray-lungs", "fundus-vessels"), embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1),
                       num_heads=(1, 1, 2, 2), window_sizes=(7, 7, 7, 7), prompt_embed_dim=32, decoder_mlp_dim=64,
                       decoder_heads=2, bag_tokens=2, classifier_hidden=16),
    "esp_medsam_teacher": dict(tasks=("xray-lungs", "fundus-vessels"), embed_dims=(16, 32, 40, 64),
                               depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_sizes=(7, 7, 7, 7),
                               prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2, bag_tokens=2,
                               classifier_hidden=16),
    "lite_medsam_student": dict(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                                window_sizes=(7, 7, 7, 7), prompt_embed_dim=32, decoder_mlp_dim=64, decoder_heads=2),
    "prompt_free_head": dict(tasks=("xray-lungs", "fundus-vessels"), prompt_embed_dim=32, decoder_mlp_dim=64,
                             decoder_heads=2, classifier_hidden=16),
    "basic_unet": dict(features=(8, 8, 16, 32, 64, 8)),
    "resnet_unet": dict(arch="resnet18", base_width=8, decoder_channels=(32, 16, 16, 8, 8)),
    "vit_unet": dict(hidden_size=48, mlp_dim=96, num_heads=2, feature_size=8),
    "ensemble": dict(members=[{"name": "basic_unet", "options": {"features": (8, 8, 16, 32, 64, 8)}},
                              {"name": "resnet_unet", "options": {"arch": "resnet18", "base_width": 8,
                                                                  "decoder_channels": (32, 16, 16, 8, 8)}}]),
}


def tiny_model_config(name: str, img_size: int = 64) -> dict:
    """Test-scale builder options for a registered model."""
    from medseg.models import sized_options

    return sized_options(name, img_size, TINY_CONFIGS[name])


class Killed(Exception):
    """Raised by :func:`kill_training_after_checkpoint`'s patched ``train`` to stand for a killed process."""


def kill_training_after_checkpoint(monkeypatch, stage: str) -> list[tuple[str, bool]]:
    """Patch ``medseg.training.train`` so that the first (non-resumed) training of the stage folder named ``stage``
    runs to its step-10 checkpoint, loses its model folder and raises :class:`Killed` — a kill after the checkpoint
    and before the model is saved. Returns the (stage folder name, resume flag) of every call, in order."""
    import shutil

    import medseg.training

    real_train = medseg.training.train
    calls: list[tuple[str, bool]] = []

    def train(tc, resume=False):
        name = Path(tc.out_dir).name
        calls.append((name, resume))
        if name == stage and not resume:
            result = real_train(tc.model_copy(update={"trainer": tc.trainer.model_copy(update={"max_steps": 10})}))
            shutil.rmtree(result.model_dir)
            raise Killed
        return real_train(tc, resume=resume)

    monkeypatch.setattr(medseg.training, "train", train)
    return calls
