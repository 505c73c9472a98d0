"""Training a head on a frozen encoder: the encoder's embeddings of every training and validation image (and of
fixed views of it, the flips) are computed once into memory-mapped fp16 caches
(:func:`medseg.training.embedding_cache.build_embedding_cache`), and every step reads them instead of running the
encoder — about 20× less work per step for LiteMedSAM's encoder on a CPU.

* :class:`CachedEmbeddingDataset` — (embedding, mask) items; a draw picks the row and one of the cached views (the
  mask is seen through the same view).
* :class:`EmbeddingDataModule` — catalog → split → image caches → embedding caches (one per split and view, built
  once per node) → resumable loaders, with the interface of :class:`SegmentationDataModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data.geometry import region_box
from medseg.training.config import DataConfig
from medseg.training.datamodule import SegmentationDataModule
from medseg.training.dataset import CachedSplit, open_cache
from medseg.training.embedding_cache import apply_view, build_embedding_cache, cache_progress, open_embeddings


class CachedEmbeddingDataset(Dataset):
    """Items from an image cache and its embedding caches, one per view.

    Draw id ``i`` (:class:`ResumableSampler`) picks row ``rows[i mod N]`` and, with several views, one of them from
    ``np.random.default_rng((seed, i))`` — deterministic, so a resumed run sees the same stream.

    Args:
        split: the image cache (masks, valid regions, native ground truth for validation).
        embeddings: view name → (N, C, R, R) float16 embeddings of ``split``'s rows seen through that view.
        rows: the rows to serve (default: all).
        seed: view-choice seed.
        target_index: dataset → task index (``None``: 0).

    Item:
        image (C, R, R) float32 — the embedding; mask (1, S, S) float32 {0, 1} in the view's frame; box (4,) the
        image region; index () int64 (row); target () int64 (task).
    """

    def __init__(self, split: CachedSplit, embeddings: dict[str, np.ndarray], *, rows: Sequence[int] | None = None,
                 seed: int = 0, target_index: dict[str, int] | None = None) -> None:
        if not embeddings:
            raise ValueError("at least one view's embeddings are needed")
        for view, emb in embeddings.items():
            if len(emb) != len(split):
                raise ValueError(f"view {view}: {len(emb)} embeddings for {len(split)} images")
        self.split, self.embeddings, self.views = split, embeddings, list(embeddings)
        self.rows = list(range(len(split))) if rows is None else list(rows)
        self.seed, self.target_index = seed, target_index

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        row = self.rows[int(draw) % len(self.rows)]
        view = self.views[0]
        if len(self.views) > 1:
            view = self.views[int(np.random.default_rng((self.seed, int(draw))).integers(len(self.views)))]
        h, w = (int(v) for v in self.split.valid[row])
        mask = apply_view(np.asarray(self.split.masks[row]), (h, w), view, row)  # the image row's own view
        target = 0 if self.target_index is None else self.target_index[self.split.info[row]["dataset"]]
        return {
            "image": torch.from_numpy(np.asarray(self.embeddings[view][row], dtype=np.float32)),
            "mask": torch.from_numpy(mask.astype(np.float32))[None],
            "box": torch.from_numpy(region_box((h, w))),
            "index": torch.tensor(row, dtype=torch.int64),
            "target": torch.tensor(target, dtype=torch.int64),
        }


class EmbeddingDataModule(SegmentationDataModule):
    """``data.embeddings`` set: the image caches of :class:`SegmentationDataModule`, then the frozen encoder's
    embeddings of them (every view of ``data.embeddings.views`` for training, the plain view for validation).
    Rows of ``data.embeddings.exclude_datasets`` are skipped in both (the caches keep them, so a run that holds
    datasets out shares the embeddings of one that does not). Entries, targets and the (resumable) loaders are the
    parent's.

    Args:
        cfg: the data section (``cfg.embeddings`` must be set).
        batch_size, seed, cache_root: as :class:`SegmentationDataModule`.
    """

    def __init__(self, cfg: DataConfig, *, batch_size: int, seed: int, cache_root: Path) -> None:
        if cfg.embeddings is None:
            raise ValueError("EmbeddingDataModule needs data.embeddings")
        if cfg.patch_size is not None:
            raise ValueError("data.embeddings trains on whole letterboxed images: unset data.patch_size")
        super().__init__(cfg, batch_size=batch_size, seed=seed, cache_root=cache_root)
        self.embed_root = self.cache_root / "embeddings"
        self._built: list[tuple[Path, dict[str, Path]] | None] | None = None

    def embedding_caches(self) -> list[tuple[Path, dict[str, Path]] | None]:
        """Per split (train, val): (image cache, view → embedding cache); built once per process."""
        if self._built is None:
            self._built = self._build()
        return self._built

    def _build(self) -> list[tuple[Path, dict[str, Path]] | None]:
        from medseg.models import build_model, sized_options

        e = self.cfg.embeddings
        assert e is not None
        encoder = build_model(e.encoder, **sized_options(e.encoder, self.cfg.img_size, e.options)).image_encoder
        out: list[tuple[Path, dict[str, Path]] | None] = []
        for part, images in zip(("train", "val"), self.caches(), strict=True):
            if images is None:
                out.append(None)
                continue
            built = {}
            for view in e.views if part == "train" else ["none"]:
                with cache_progress(images, f"embeddings {part}/{view}", True) as bar:
                    built[view] = build_embedding_cache(images, encoder, self.embed_root, batch_size=e.batch_size,
                                                        view=view, engine=e.engine,
                                                        progress=None if bar is None else bar.update)
            out.append((images, built))
        return out

    def prepare_data(self) -> None:
        self.embedding_caches()

    def _dataset(self, built: tuple[Path, dict[str, Path]]) -> CachedEmbeddingDataset:
        images, views = built
        split = open_cache(images)
        e = self.cfg.embeddings
        assert e is not None
        rows = [i for i, info in enumerate(split.info) if info["dataset"] not in set(e.exclude_datasets)]
        return CachedEmbeddingDataset(split, {v: open_embeddings(p) for v, p in views.items()}, rows=rows,
                                      seed=self.seed, target_index=self._target_index())

    def setup(self, stage: str | None = None) -> None:
        train, val = self.embedding_caches()
        assert train is not None
        self.train_set = self._dataset(train)  # type: ignore[assignment]
        self.val_set = self._dataset(val) if val is not None else None  # type: ignore[assignment]
        if self.val_set is not None and not len(self.val_set):
            self.val_set = None
