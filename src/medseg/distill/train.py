"""Encoder distillation: a student image encoder learns the teacher's cached embeddings (MSE), with the same
Lightning engine, checkpoints, resume and DDP as :func:`medseg.training.train`.

The CMMC paper distils LiteMedSAM's encoder into a lighter one with MSE, AdamW 5e-5, weight decay 0.01; the result
is joined to LiteMedSAM's prompt encoder and mask decoder (``lite_medsam_student`` loads them) and saved as a full
model folder, ready for ``medseg train`` (raw / edge pre-training) or ``medseg predict``.

Example::

    cfg = load_distill_config(None, ["data.root=../shared/data", "out_dir=runs/student", "trainer.max_steps=500"])
    result = distill(cfg)          # result.model_dir: the student with LiteMedSAM's decoder
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from medseg.models import build_model, sized_options
from medseg.models.parts import is_task_model
from medseg.training.base_module import BaseModule, init_from_folder
from medseg.training.config import (
    ModelConfig,
    OptimConfig,
    TrainConfig,
    TrainerConfig,
    load_config,
    refuse_unused_sections,
)
from medseg.training.datamodule import SegmentationDataModule
from medseg.training.dataset import open_cache
from medseg.training.embedding_cache import build_embedding_cache, cache_progress, open_embeddings
from medseg.training.fit import TrainResult, build_trainer, fit_and_save
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

    objective: Literal["distill"] = "distill"  # type: ignore[assignment]
    model: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    #: MMDKD (ESP-MedSAM): the adapted teacher whose embeddings each task's parameter bag learns (the student must
    #: be a task model, ``data.heads: per_target``); ``teacher`` then gives the common targets of the shared encoder
    specific_teacher: TeacherConfig | None = None
    common_weight: float = Field(1.0, ge=0)
    specific_weight: float = Field(1.0, ge=0)
    optim: DistillOptimConfig = Field(default_factory=DistillOptimConfig)
    trainer: DistillTrainerConfig = Field(default_factory=DistillTrainerConfig)
    embed_batch_size: int = Field(8, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _own_loss(cls, data: Any) -> Any:
        return refuse_unused_sections(data, "distillation: the MSE to the teacher's embeddings")


def load_distill_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DistillConfig:
    """Like :func:`medseg.training.load_config`, for a :class:`DistillConfig`."""
    return load_config(path, overrides, schema=DistillConfig)  # type: ignore[return-value]


class EmbeddingDataset(Dataset):
    """(letterboxed image, teacher embedding) pairs; with MMDKD also the adapted teacher's embedding and the task.

    Item: image (3, S, S) float32 [0, 1]; target (C, h, w) float32; index () int64 (draw ids wrap like
    :class:`medseg.training.dataset.SegmentationDataset`); with ``specific``: target_specific (C, h, w) float32 and
    task () int64.
    """

    def __init__(self, image_cache: Path, embeddings: Path, specific: Path | None = None,
                 task_index: dict[str, int] | None = None) -> None:
        self.split = open_cache(image_cache)
        self.targets = open_embeddings(embeddings)
        self.specific = open_embeddings(specific) if specific is not None else None
        self.task_index = task_index
        for emb, path in ((self.targets, embeddings), (self.specific, specific)):
            if emb is not None and len(emb) != len(self.split):
                raise ValueError(f"{path}: {len(emb)} embeddings for {len(self.split)} images")
        if self.specific is not None and task_index is None:
            raise ValueError("specific (MMDKD) targets need a task per dataset")

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        row = int(draw) % len(self.split)
        item = {"image": torch.from_numpy(np.asarray(self.split.images[row], dtype=np.float32)),
                "target": torch.from_numpy(np.asarray(self.targets[row], dtype=np.float32)),
                "index": torch.tensor(row, dtype=torch.int64)}
        if self.specific is not None and self.task_index is not None:
            item["target_specific"] = torch.from_numpy(np.asarray(self.specific[row], dtype=np.float32))
            item["task"] = torch.tensor(self.task_index[self.split.info[row]["dataset"]], dtype=torch.int64)
        return item


class SharedBagEncoder(nn.Module):
    """The image encoder of a model as a plain ``images → embedding`` module: a SAM's encoder as it is; a task
    model's (ESP-MedSAM teacher) with its one shared parameter bag, or with none if it has no controller.

    Shape: (B, 3, S, S) → (B, C, h, w).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.bagged = getattr(self.encoder, "controller", None) is not None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.bagged:
            return self.encoder(images)
        return self.encoder(images, torch.zeros(images.shape[0], dtype=torch.int64, device=images.device))


def teacher_encoder(t: ModelConfig, img_size: int) -> nn.Module:
    """The teacher's image encoder (built, loaded from ``t.init`` if given, in eval mode)."""
    model = build_model(t.name, **sized_options(t.name, img_size, t.options))
    if t.init is not None:
        init_from_folder(model, t.init)
    if getattr(model.image_encoder, "controller", None) is None:  # the encoder itself (keeps cache names stable)
        return model.image_encoder.eval()
    return SharedBagEncoder(model).eval()


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
        self._built: list[tuple[Path, Path, Path | None] | None] | None = None

    def _caches(self) -> list[tuple[Path, Path, Path | None] | None]:
        """Per split (train, val): (image cache, teacher embeddings, adapted-teacher embeddings or None); built
        once per process."""
        if self._built is None:
            self._built = self._build_caches()
        return self._built

    def _build_caches(self) -> list[tuple[Path, Path, Path | None] | None]:
        size = self.cfg.data.img_size
        teachers = [("teacher", teacher_encoder(self.cfg.teacher, size))]
        if self.cfg.specific_teacher is not None:
            teachers.append(("adapted teacher", teacher_encoder(self.cfg.specific_teacher, size)))
        out: list[tuple[Path, Path, Path | None] | None] = []
        for part, images in zip(("train", "val"), self.images.caches(), strict=True):
            if images is None:
                out.append(None)
                continue
            embeddings: list[Path | None] = []
            for who, encoder in teachers:
                with cache_progress(images, f"{who} embeddings ({part})", self.cfg.trainer.progress_bar) as bar:
                    embeddings.append(build_embedding_cache(images, encoder, self.embed_root,
                                                            batch_size=self.cfg.embed_batch_size,
                                                            progress=None if bar is None else bar.update))
            out.append((images, embeddings[0], embeddings[1] if len(embeddings) > 1 else None))  # type: ignore[arg-type]
        return out

    def prepare_data(self) -> None:
        self._caches()

    def setup(self, stage: str | None = None) -> None:
        train, val = self._caches()
        assert train is not None
        tasks = self.images._target_index() if self.cfg.specific_teacher is not None else None
        self.train_set = EmbeddingDataset(*train, task_index=tasks)
        self.val_set = EmbeddingDataset(*val, task_index=tasks) if val is not None else None

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


class DistillModule(BaseModule):
    """MSE between the student's image-encoder output and the teacher's cached embedding; only the encoder learns.

    Args:
        config: the :class:`DistillConfig` as a plain dict (stored in checkpoints).
        targets: a task model's tasks (one parameter bag each); ``None`` for any other student.
    """

    schema = DistillConfig
    val_loss_key = "val/mse"

    def __init__(self, config: dict[str, Any], targets: list[str] | None = None) -> None:
        cfg = DistillConfig.model_validate(config)
        if not is_task_model(cfg.model.name):
            if cfg.specific_teacher is not None:
                raise ValueError(f"MMDKD (specific_teacher) distils parameter bags; {cfg.model.name} has none")
            targets = None  # one output whatever the data's targets; a task model without them: the base says so
        super().__init__(config, targets)
        for pname, p in self.model.named_parameters():  # only the encoder learns (minus model.freeze)
            p.requires_grad_(pname.startswith("image_encoder.") and p.requires_grad)

    def _loss(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """MSE to the teacher's embedding; with MMDKD the weighted sum of the common term (shared encoder, no bag,
        against ``teacher``) and the specific term (each sample's bag, against the adapted teacher)."""
        bs = batch["image"].shape[0]
        if "target_specific" not in batch:
            return F.mse_loss(self.model.image_encoder(batch["image"]).float(), batch["target"])
        enc = self.model.image_encoder
        shared = enc.shared_features(batch["image"])
        common = F.mse_loss(enc(batch["image"], None, shared=shared).float(), batch["target"])
        specific = F.mse_loss(enc(batch["image"], batch["task"], shared=shared).float(), batch["target_specific"])
        self.log(f"{stage}/mse_common", common, sync_dist=stage == "val", batch_size=bs)
        self.log(f"{stage}/mse_specific", specific, sync_dist=stage == "val", batch_size=bs)
        return self.cfg.common_weight * common + self.cfg.specific_weight * specific

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self._loss(batch, "train")
        self.log("train/mse", loss, batch_size=batch["image"].shape[0])
        return loss, {}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/mse", self._loss(batch, "val"), prog_bar=True, sync_dist=True, batch_size=batch["image"].shape[0])


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
    module = DistillModule(cfg.model_dump(mode="json"), targets=data.images.targets())
    # a task model's bags get no gradient in plain (common-only) distillation
    trainer = build_trainer(cfg, has_val=has_val, unused_parameters=module.targets is not None)
    extra: dict[str, Any] = {"distilled_from": cfg.teacher.name}
    if module.targets is not None:
        extra["targets"] = module.targets
    return fit_and_save(cfg, trainer, module, data, resume=resume, extra=extra)

