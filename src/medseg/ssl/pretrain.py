"""Encoder-only self-supervised pre-training (``medseg pretrain CONFIG``): SimSiam, BYOL or DINO on the images of
a data set (masks, if any, are ignored), on the same Lightning engine, data caches, checkpoints and resume as
``medseg train``.

The model is a registered encoder–decoder segmentation model (``resnet_unet``, ``vit_unet``); only its encoder
(``encoder_prefix``) and the method's heads learn. What is saved (``out_dir/model/``) is the whole segmentation model,
its decoder as built, so that fine-tuning starts from it with ``model.init_mode=encoder``.

Views are drawn inside the image region of each letterboxed image (not its padding), from a generator seeded by
(seed, rank, step): a resumed run draws the views it would have drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from pydantic import Field, model_validator
from torch import nn

from medseg.models.parts import encoder_prefix
from medseg.ssl.backbone import Backbone
from medseg.ssl.methods import build_method
from medseg.ssl.views import random_view
from medseg.training.base_module import BaseModule
from medseg.training.config import DataConfig, TrainConfig, TrainerConfig, load_config, refuse_unused_sections
from medseg.training.datamodule import SegmentationDataModule
from medseg.training.fit import TrainResult, build_trainer, fit_and_save
from medseg.utils.checks import check_accelerator, check_output_dir


class SslTrainerConfig(TrainerConfig):
    """Model selection on the validation loss of the method."""

    monitor: str = "val/loss"
    monitor_mode: Literal["max", "min"] = "min"


class SslDataConfig(DataConfig):
    """Whole images (letterboxed), no box prompt needed: the region box marks each image's content."""

    box_prompt: Literal["gt", "whole"] = "whole"


class SslConfig(TrainConfig):
    """A :class:`TrainConfig` (the model is the segmentation model whose encoder pre-trains) plus the method.

    ``method``: ``simsiam`` | ``byol`` | ``dino``; ``method_options``: its constructor options
    (:mod:`medseg.ssl.methods`: widths, temperatures, momentum, DINO's local crops).
    """

    objective: Literal["ssl"] = "ssl"  # type: ignore[assignment]
    method: Literal["simsiam", "byol", "dino"] = "simsiam"
    method_options: dict[str, Any] = Field(default_factory=dict)
    data: SslDataConfig = Field(default_factory=SslDataConfig)
    trainer: SslTrainerConfig = Field(default_factory=SslTrainerConfig)

    @model_validator(mode="before")
    @classmethod
    def _own_loss(cls, data: Any) -> Any:
        return refuse_unused_sections(data, "self-supervised pre-training: the method's own loss trains the encoder")


def load_ssl_config(path: str | Path | None = None, overrides: list[str] | None = None) -> SslConfig:
    """Like :func:`medseg.training.load_config`, for an :class:`SslConfig`."""
    return load_config(path, overrides, schema=SslConfig)  # type: ignore[return-value]


class SslModule(BaseModule):
    """The segmentation model, its encoder as a pooled :class:`Backbone`, and the method on top; the optimiser
    drives the method (the encoder and the method's heads).

    Batches are :class:`medseg.training.dataset.SegmentationDataset` dicts; ``image`` (B, 3, S, S) and the region
    ``box`` (B, 4) are used.
    """

    schema = SslConfig

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        prefix = encoder_prefix(self.model)
        for name, p in self.model.named_parameters():  # the decoder is not part of encoder-only pre-training
            p.requires_grad_(name.startswith(prefix + ".") and p.requires_grad)
        self.method = build_method(self.cfg.method, Backbone(self.model), **self.cfg.method_options)
        self.views = self.method.view_options(self.cfg.data.img_size)

    def optimized(self) -> nn.Module:
        return self.method

    def _views(self, batch: dict[str, torch.Tensor], seed: tuple[int, ...]) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(hash(seed) & 0x7FFF_FFFF_FFFF)
        size = batch["image"].shape[-1]
        regions = (batch["box"].float() + torch.tensor([0.0, 0.0, 1.0, 1.0], device=batch["box"].device)) / size
        return [random_view(batch["image"], o, g, regions.clamp(0, 1)) for o in self.views]

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.method(self._views(batch, (self.cfg.seed, self.global_rank, self.global_step))), {}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser step, then the momentum network's update (here rather than in ``on_train_batch_end``:
        Lightning saves step checkpoints before that hook, and a resumed run would miss one update)."""
        super().optimizer_step(*args, **kwargs)
        steps = self.trainer.max_steps
        self.method.momentum_update((self.global_step + 1) / steps if steps and steps > 0 else 0.0)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        views = self._views(batch, (self.cfg.seed, -1, batch_idx))  # the same views at every validation
        self.log("val/loss", self.method(views), prog_bar=True, sync_dist=True, batch_size=batch["image"].shape[0])


def pretrain(cfg: SslConfig, *, resume: bool = False,
             extra_callbacks: list[L.Callback] | None = None) -> TrainResult:
    """Pre-train ``cfg.model``'s encoder with ``cfg.method``; returns where the whole model went (``out_dir/model``:
    best-on-validation-loss weights with ``trainer.final_weights=best``, else the last)."""
    out = Path(cfg.out_dir)
    check_accelerator(cfg.trainer.accelerator)
    check_output_dir(out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = SegmentationDataModule(cfg.data, batch_size=cfg.trainer.batch_size, seed=cfg.seed,
                                  cache_root=out / "cache")
    module = SslModule(cfg.model_dump(mode="json"))
    trainer = build_trainer(cfg, has_val=bool(data.entries()[1]), extra_callbacks=extra_callbacks)
    return fit_and_save(cfg, trainer, module, data, resume=resume,
                        extra={"seed": cfg.seed, "pretrained_with": cfg.method})


__all__ = ["SslConfig", "SslModule", "load_ssl_config", "pretrain"]
