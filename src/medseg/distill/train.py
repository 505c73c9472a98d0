"""Encoder distillation: a student image encoder learns the teacher's cached embeddings (MSE), with the same
Lightning engine, checkpoints, resume and DDP as :func:`medseg.training.train`.

The CMMC paper distils LiteMedSAM's encoder into a lighter one with MSE, AdamW 5e-5, weight decay 0.01; the result
is joined to LiteMedSAM's prompt encoder and mask decoder (``lite_medsam_student`` loads them) and saved as a full
model folder, ready for ``medseg train`` (raw / edge pre-training) or ``medseg predict``.

Example::

    cfg = load_distill_config("configs/distill_student.yaml", ["data.root=../shared/data"])
    result = distill(cfg)          # result.model_dir: the student with LiteMedSAM's decoder
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import DataLoader, Dataset

from medseg.distill.embeddings import build_embedding_cache, open_embeddings
from medseg.models import build_model, sized_options
from medseg.training.config import ModelConfig, OptimConfig, TrainConfig, TrainerConfig, load_config
from medseg.training.datamodule import SegmentationDataModule
from medseg.training.dataset import open_cache
from medseg.training.fit import TrainResult, build_trainer, fit_and_save
from medseg.training.module import INIT_ONLY_OPTIONS, freeze_modules, init_from_folder
from medseg.training.sampler import ResumableLoader, ResumableSampler
from medseg.utils.checks import check_accelerator, check_output_dir


class DistillOptimConfig(OptimConfig):
    """The paper's distillation optimiser: AdamW 5e-5, weight decay 0.01."""

    lr: float = 5e-5
    weight_decay: float = 0.01


class DistillTrainerConfig(TrainerConfig):
    """Model selection on the validation MSE."""

    monitor: str = "val/mse"
    monitor_mode: Literal["max", "min"] = "min"


class StudentConfig(ModelConfig):
    """The student: LiteMedSAM's prompt encoder and decoder with a lighter image encoder."""

    name: str = "lite_medsam_student"
    options: dict[str, Any] = Field(default_factory=lambda: {"pretrained": True})


class TeacherConfig(ModelConfig):
    """The teacher whose image encoder gives the targets."""

    name: str = "lite_medsam"
    options: dict[str, Any] = Field(default_factory=lambda: {"pretrained": True})


class DistillConfig(TrainConfig):
    """A :class:`TrainConfig` whose ``model`` is the student (a SAM-family model; only its image encoder trains)
    plus the ``teacher`` whose image-encoder embeddings are the targets. Defaults follow the CMMC paper."""

    model: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    optim: DistillOptimConfig = Field(default_factory=DistillOptimConfig)
    trainer: DistillTrainerConfig = Field(default_factory=DistillTrainerConfig)
    embed_batch_size: int = Field(8, ge=1)


def load_distill_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DistillConfig:
    """Like :func:`medseg.training.load_config`, for a :class:`DistillConfig`."""
    return load_config(path, overrides, schema=DistillConfig)  # type: ignore[return-value]


class EmbeddingDataset(Dataset):
    """(letterboxed image, teacher embedding) pairs.

    Item: image (3, S, S) float32 [0, 1]; target (C, h, w) float32; index () int64 (draw ids wrap like
    :class:`medseg.training.dataset.SegmentationDataset`).
    """

    def __init__(self, image_cache: Path, embeddings: Path) -> None:
        self.split = open_cache(image_cache)
        self.targets = open_embeddings(embeddings)
        if len(self.targets) != len(self.split):
            raise ValueError(f"{embeddings}: {len(self.targets)} embeddings for {len(self.split)} images")

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        row = int(draw) % len(self.split)
        return {"image": torch.from_numpy(np.asarray(self.split.images[row], dtype=np.float32)),
                "target": torch.from_numpy(np.asarray(self.targets[row], dtype=np.float32)),
                "index": torch.tensor(row, dtype=torch.int64)}


@contextmanager
def _bar(images: Path, desc: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar over the rows of an image cache (``None`` when disabled)."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(open_cache(images).valid), desc=desc, unit="img") as bar:
        yield bar


class DistillDataModule(L.LightningDataModule):
    """Image caches → teacher-embedding caches (built once, by one process per node) → resumable loaders."""

    def __init__(self, cfg: DistillConfig, cache_root: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.images = SegmentationDataModule(cfg.data, batch_size=cfg.trainer.batch_size, seed=cfg.seed,
                                             cache_root=cache_root)
        self.embed_root = self.images.cache_root / "embeddings"
        self.train_set: EmbeddingDataset | None = None
        self.val_set: EmbeddingDataset | None = None

    def _caches(self) -> list[tuple[Path, Path] | None]:
        t = self.cfg.teacher
        teacher = build_model(t.name, **sized_options(t.name, self.cfg.data.img_size, t.options)).image_encoder
        out: list[tuple[Path, Path] | None] = []
        for part, images in zip(("train", "val"), self.images.caches(), strict=True):
            if images is None:
                out.append(None)
                continue
            with _bar(images, f"teacher embeddings ({part})", self.cfg.trainer.progress_bar) as bar:
                out.append((images, build_embedding_cache(images, teacher, self.embed_root,
                                                          batch_size=self.cfg.embed_batch_size,
                                                          progress=None if bar is None else bar.update)))
        return out

    def prepare_data(self) -> None:
        self._caches()

    def setup(self, stage: str | None = None) -> None:
        train, val = self._caches()
        assert train is not None
        self.train_set = EmbeddingDataset(*train)
        self.val_set = EmbeddingDataset(*val) if val is not None else None

    def train_dataloader(self) -> ResumableLoader:
        assert self.train_set is not None
        world, rank = (1, 0) if self.trainer is None else (self.trainer.world_size, self.trainer.global_rank)
        sampler = ResumableSampler(len(self.train_set), seed=self.cfg.seed, num_replicas=world, rank=rank)
        return ResumableLoader(self.train_set, sampler=sampler, batch_size=self.cfg.trainer.batch_size,
                               num_workers=self.cfg.data.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        world, rank = (1, 0) if self.trainer is None else (self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(self.val_set, batch_size=self.cfg.trainer.batch_size,
                          sampler=list(range(rank, len(self.val_set), world)), num_workers=self.cfg.data.num_workers)


class DistillModule(L.LightningModule):
    """MSE between the student's image-encoder output and the teacher's cached embedding.

    Args:
        config: the :class:`DistillConfig` as a plain dict (stored in checkpoints).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg = DistillConfig.model_validate(config)
        m = self.cfg.model
        opts = sized_options(m.name, self.cfg.data.img_size, m.options)
        self.model = build_model(m.name, **opts)
        if m.init is not None:
            init_from_folder(self.model, m.init)
        self.model_options = {k: v for k, v in opts.items() if k not in INIT_ONLY_OPTIONS}
        for name, p in self.model.named_parameters():  # only the encoder learns
            p.requires_grad_(name.startswith("image_encoder."))
        self.frozen = freeze_modules(self.model, m.freeze)  # parts of the encoder kept fixed, if any

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        """Frozen submodules (``model.freeze``) run in eval mode: Lightning switches whole modules to train mode
        (and restores saved modes after validation), so this is enforced before every step."""
        for mod in self.frozen:
            mod.eval()

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.mse_loss(self.model.image_encoder(batch["image"]).float(), batch["target"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/mse", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        if hasattr(loader, "mark_consumed"):
            loader.mark_consumed(batch_idx)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/mse", self._loss(batch), prog_bar=True, sync_dist=True, batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        if o.scheduler != "cosine" or not self.cfg.trainer.max_steps or self.cfg.trainer.max_steps < 0:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def distill(cfg: DistillConfig, *, resume: bool = False) -> TrainResult:
    """Distil ``cfg.teacher``'s image encoder into ``cfg.model``'s; returns where the full student model went
    (``out_dir/model``: best-on-validation weights, or the last ones without a validation set).

    A cosine schedule needs ``trainer.max_steps``; otherwise the learning rate is constant.
    """
    out = Path(cfg.out_dir)
    check_accelerator(cfg.trainer.accelerator)
    check_output_dir(out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = DistillDataModule(cfg, cache_root=out / "cache")
    has_val = bool(data.images.entries()[1])
    module = DistillModule(cfg.model_dump(mode="json"))
    trainer = build_trainer(cfg, has_val=has_val)
    return fit_and_save(cfg, trainer, module, data, resume=resume, extra={"distilled_from": cfg.teacher.name})

