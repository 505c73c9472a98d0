"""Embedding cache of a frozen encoder: equals its output (also of flipped views), reused, resumes after a kill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medseg.data import discover, generate_dataset
from medseg.models import build_model
from medseg.training.dataset import build_cache, open_cache
from medseg.training.embedding_cache import (
    apply_view,
    build_embedding_cache,
    embedding_cache_dir,
    open_embeddings,
)
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


@given(h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 1000),
       view=st.sampled_from(["none", "hflip", "vflip"]))  # the flips (jitters and zooms: test_augment, below)
def test_a_view_twice_is_the_identity_and_the_padding_stays(h: int, w: int, seed: int, view: str) -> None:
    canvas = np.random.default_rng(seed).random((3, 8, 8))
    once = apply_view(canvas, (h, w), view)
    np.testing.assert_array_equal(apply_view(once, (h, w), view), canvas)
    outside = np.ones((8, 8), bool)
    outside[:h, :w] = False
    np.testing.assert_array_equal(once[:, outside], canvas[:, outside])
    mask = canvas[0] > 0.5  # a mask goes through the same view as its image
    np.testing.assert_array_equal(apply_view(mask, (h, w), view), once[0] > 0.5)


def test_a_view_cache_holds_the_encoder_output_of_the_viewed_images(setup) -> None:
    images, teacher, root = setup
    split = open_cache(images)
    plain = build_embedding_cache(images, teacher, root, batch_size=2)
    flipped = build_embedding_cache(images, teacher, root, batch_size=2, view="hflip", engine="optimized")
    assert flipped != plain and flipped.name.endswith("-hflip")
    views = np.stack([apply_view(np.asarray(split.images[i], np.float32), tuple(split.valid[i]), "hflip")
                      for i in range(len(split))])
    with torch.inference_mode():
        ref = teacher(torch.from_numpy(views)).numpy()
    np.testing.assert_allclose(open_embeddings(flipped).astype(np.float32), ref, atol=3e-3, rtol=3e-3)
    import json

    meta = json.loads((flipped / "meta.json").read_text())
    assert meta["view"] == "hflip" and meta["engine"] == "optimized" and meta["preprocessing"]["img_size"] == 64
    assert meta["teacher_digest"] in flipped.name and meta["image_cache_key"] == images.name
    with pytest.raises(ValueError, match="unknown view"):
        apply_view(views[0], (4, 4), "rot90")


def test_image_cache_keys_follow_the_files_content_not_their_mtimes(tmp_path: Path) -> None:
    """A data folder copied again (same bytes, new mtimes) keeps its caches; a file changed in place does not."""
    import os

    root = generate_dataset(tmp_path / "d", per_modality=2, size=40, seed=0, modalities=("xray",))
    entries = [e for e in discover(root)[0] if e.mask is not None]
    first = build_cache(entries, tmp_path / "cache", img_size=64)
    for e in entries:
        os.utime(e.image, ns=(10**18, 10**18))
    assert build_cache(entries, tmp_path / "cache", img_size=64) == first
    with open(entries[0].image, "ab") as f:
        f.write(b"\0")  # PNG readers ignore trailing bytes: same pixels, other content
    assert build_cache(entries, tmp_path / "cache", img_size=64) != first


def test_pooled_embeddings_are_the_classifiers_pool_of_the_cached_rows(setup) -> None:
    """The refit's input from a cache equals :meth:`TaskClassifier.pool` of the cached tokens, row by row (any
    row subset, any read batch)."""
    from medseg.models.task_classifier import TaskClassifier
    from medseg.training.task_classifier import pooled_embeddings

    images, teacher, root = setup
    folder = build_embedding_cache(images, teacher, root, batch_size=4)
    emb = torch.from_numpy(np.asarray(open_embeddings(folder), dtype=np.float32))
    ref = TaskClassifier.pool(emb.flatten(2).transpose(1, 2))
    assert torch.equal(pooled_embeddings(folder), ref)
    rows = [4, 0, 3]
    assert torch.equal(pooled_embeddings(folder, rows, batch_size=2), ref[rows])
    assert pooled_embeddings(folder, []).shape == (0, ref.shape[1])


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), row=st.integers(0, 10_000))
def test_a_zoom_view_moves_image_and_mask_alike_and_keeps_the_padding(h: int, w: int, row: int) -> None:
    """``zoom1`` of an image and of its mask (same row) are the same crop: the zoomed mask is the zoomed image's
    object up to the interpolation at its border; labels stay labels, the padding stays, and the same row always
    gives the same view."""
    yy, xx = np.mgrid[:40, :40]
    mask = (((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 <= 1).astype(np.uint8)
    mask[h:, :] = 0
    mask[:, w:] = 0
    image = np.repeat(mask[None].astype(np.float32) * 200 + 20, 3, axis=0)
    image[:, h:, :] = 0
    image[:, :, w:] = 0
    zi, zm = apply_view(image, (h, w), "zoom1", row), apply_view(mask, (h, w), "zoom1", row)
    assert zm.dtype == mask.dtype and set(np.unique(zm)) <= {0, 1}
    np.testing.assert_array_equal(apply_view(image, (h, w), "zoom1", row), zi)
    assert (zi[:, h:, :] == 0).all() and (zi[:, :, w:] == 0).all() and (zm[h:, :] == 0).all()
    disagree = (zm.astype(bool) != (zi[0] > 120))[:h, :w]
    edge = np.zeros_like(disagree)  # where the zoomed object has a border (one pixel either side)
    zb = zm[:h, :w].astype(bool)
    for axis in (0, 1):
        d = np.diff(zb, axis=axis)
        edge[:-1 if axis == 0 else None, :-1 if axis == 1 else None] |= d
        edge[1 if axis == 0 else None:, 1 if axis == 1 else None:] |= d
    assert not (disagree & ~edge).any()
