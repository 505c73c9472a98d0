"""LightningDataModule: catalog → split → on-disk cache → resumable loaders (letterboxed images, or native-resolution
patches with whole-image validation)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from medseg.data import CatalogEntry, cap_per_dataset, discover, read_manifest, stratified_split, target_name
from medseg.data.modality import canonical_modality
from medseg.errors import MedsegError
from medseg.training.config import DataConfig
from medseg.training.dataset import NativeDataset, PatchDataset, SegmentationDataset, build_cache, open_cache
from medseg.training.sampler import ResumableLoader, ResumableSampler


def select_entries(cfg: DataConfig, seed: int) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
    """(train, val) catalog entries from ``cfg.manifest`` (split column: ``train`` and ``val`` rows; ``test`` rows are
    never read here) or ``cfg.root`` (seeded, group-aware stratified split)."""
    if cfg.manifest is not None:
        entries = read_manifest(cfg.manifest)
    elif cfg.root is not None:
        entries, _ = discover(cfg.root)
    else:
        raise MedsegError("data: set data.root (a folder) or data.manifest (a CSV)")
    entries = [e for e in entries if e.mask is not None]
    if cfg.modalities:
        wanted = {canonical_modality(m) for m in cfg.modalities}
        entries = [e for e in entries if e.modality in wanted]
    entries = cap_per_dataset(entries, cfg.max_per_dataset, seed)
    if not entries:
        raise MedsegError(f"data: no image/mask pairs found in {cfg.manifest or cfg.root}")
    if cfg.manifest is not None and any(e.split for e in entries):
        # only ``val`` rows validate: the test split is never used to choose weights or schedules
        train = [e for e in entries if e.split == "train"]
        val = [e for e in entries if e.split == "val"]
        return train, val
    if cfg.val_fraction <= 0:
        return entries, []
    split = stratified_split(entries, test=cfg.val_fraction, seed=seed, group_rules=cfg.group_rules)
    return [e for e in split if e.split == "train"], [e for e in split if e.split == "test"]


class SegmentationDataModule(L.LightningDataModule):
    """Builds the caches once (``prepare_data`` runs on one process per node) and serves resumable loaders.

    Args:
        cfg: the data section of the run config.
        batch_size: per-process batch size.
        seed: split and augmentation seed.
        cache_root: folder of the letterbox caches (content-addressed, safe to share between runs).
    """

    def __init__(self, cfg: DataConfig, *, batch_size: int, seed: int, cache_root: Path) -> None:
        super().__init__()
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.cache_root = Path(cfg.cache_dir) if cfg.cache_dir is not None else cache_root
        self.train_set: SegmentationDataset | PatchDataset | None = None
        self.val_set: SegmentationDataset | NativeDataset | None = None
        self._entries: tuple[list[CatalogEntry], list[CatalogEntry]] | None = None

    def entries(self) -> tuple[list[CatalogEntry], list[CatalogEntry]]:
        """(train, val) catalog entries, discovered and split once."""
        if self._entries is None:
            self._entries = select_entries(self.cfg, self.seed)
        return self._entries

    def targets(self) -> list[str] | None:
        """Output names of a ``heads: per_target`` model (sorted target names of the training and validation
        data), else ``None``."""
        if self.cfg.heads == "single":
            return None
        train, val = self.entries()
        return sorted({target_name(e.dataset, self.cfg.target_of) for e in [*train, *val]})

    def _target_index(self) -> dict[str, int] | None:
        """dataset → output index (``None``: one output)."""
        targets = self.targets()
        if targets is None:
            return None
        train, val = self.entries()
        return {e.dataset: targets.index(target_name(e.dataset, self.cfg.target_of)) for e in [*train, *val]}

    def caches(self) -> tuple[Path, Path | None]:
        """(train, val) cache folders, built on first use (content-addressed: reused across runs)."""
        train, val = self.entries()
        c = self.cfg
        t = build_cache(train, self.cache_root, img_size=c.img_size, mask_mode=c.mask_mode, edge=c.edge,
                        color=c.color)
        v = build_cache(val, self.cache_root, img_size=c.img_size, mask_mode=c.mask_mode, edge=c.edge,
                        color=c.color) if val else None
        return t, v

    def prepare_data(self) -> None:
        self.caches()

    def setup(self, stage: str | None = None) -> None:
        t, v = self.caches()
        c = self.cfg
        index = self._target_index()
        if c.patch_size is not None:
            self.train_set = PatchDataset(open_cache(t), patch_size=c.patch_size,
                                          foreground_oversample=c.foreground_oversample, augment=c.augment,
                                          length=c.patches_per_epoch, box_prompt=c.box_prompt, box_shift=c.box_shift,
                                          seed=self.seed, target_index=index, sampling=c.sampling)
            self.val_set = NativeDataset(open_cache(v), target_index=index) if v is not None else None
            return
        self.train_set = SegmentationDataset(open_cache(t), augment=c.augment, box_prompt=c.box_prompt,
                                             box_shift=c.box_shift, seed=self.seed, target_index=index)
        if v is not None:
            self.val_set = SegmentationDataset(open_cache(v), augment=None, box_prompt=c.box_prompt, box_shift=0,
                                               seed=self.seed, target_index=index)

    def _world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 1, 0
        return int(self.trainer.world_size), int(self.trainer.global_rank)

    def train_dataloader(self) -> ResumableLoader:
        assert self.train_set is not None
        world, rank = self._world()
        sampler = ResumableSampler(len(self.train_set), seed=self.seed, shuffle=True, num_replicas=world, rank=rank)
        return ResumableLoader(self.train_set, sampler=sampler, batch_size=self.batch_size,
                               num_workers=self.cfg.num_workers, persistent_workers=False)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        world, rank = self._world()
        shard = list(range(rank, len(self.val_set), world))  # no padding: every case counted once
        batch = 1 if isinstance(self.val_set, NativeDataset) else self.batch_size  # native sizes differ
        return DataLoader(self.val_set, batch_size=batch, sampler=shard, num_workers=self.cfg.num_workers)
