"""Teacher embedding cache: equals the teacher's output, reused when unchanged, resumes after an interruption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data import discover, generate_dataset
from medseg.distill import build_embedding_cache, embedding_cache_dir, open_embeddings
from medseg.models import build_model
from medseg.training.dataset import build_cache, open_cache
from tests.conftest import tiny_model_config


@pytest.fixture()
def setup(tmp_path: Path):
    root = generate_dataset(tmp_path / "d", per_modality=3, size=40, seed=0, modalities=("xray", "dermoscopy"))
    entries = [e for e in discover(root)[0] if e.mask is not None]
    images = build_cache(entries, tmp_path / "cache", img_size=64)
    torch.manual_seed(0)
    teacher = build_model("lite_medsam", **tiny_model_config("lite_medsam")).image_encoder.eval()
    return images, teacher, tmp_path / "emb"


def test_embeddings_equal_the_teacher_and_are_reused(setup) -> None:
    images, teacher, root = setup
    seen = []
    folder = build_embedding_cache(images, teacher, root, batch_size=4, progress=seen.append)
    emb = open_embeddings(folder)
    split = open_cache(images)
    with torch.inference_mode():
        ref = teacher(torch.from_numpy(np.asarray(split.images, dtype=np.float32))).numpy()
    assert emb.dtype == np.float16 and emb.shape == ref.shape and sum(seen) == len(split)
    np.testing.assert_allclose(emb.astype(np.float32), ref, atol=2e-3, rtol=2e-3)
    assert build_embedding_cache(images, teacher, root, progress=seen.append) == folder and sum(seen) == len(split)


def test_interrupted_build_resumes_at_the_first_missing_row(setup) -> None:
    images, teacher, root = setup
    calls = []

    class Failing(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = teacher

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(len(x))
            if len(calls) == 3:  # the probe, batch 1, then fail on batch 2
                raise KeyboardInterrupt
            return self.inner(x)

    failing = Failing()
    with pytest.raises(KeyboardInterrupt):
        build_embedding_cache(images, failing, root, batch_size=2)
    folder = embedding_cache_dir(images, failing, root)
    assert not (folder / "meta.json").exists()
    calls.clear()
    calls.append(0)  # keep the failure out of the way
    calls.append(0)
    calls.append(0)
    build_embedding_cache(images, failing, root, batch_size=2)
    resumed_batches = len(calls) - 3 - 1  # minus the padding and the probe
    n = len(open_cache(images))
    assert resumed_batches == (n - 2 + 1) // 2  # rows 0–1 were not encoded again
    with torch.inference_mode():
        ref = teacher(torch.from_numpy(np.asarray(open_cache(images).images, dtype=np.float32))).numpy()
    np.testing.assert_allclose(open_embeddings(folder).astype(np.float32), ref, atol=2e-3, rtol=2e-3)


def test_unfinished_cache_is_not_opened(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"meta\.json"):
        open_embeddings(tmp_path)
