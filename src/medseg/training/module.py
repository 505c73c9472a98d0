"""The supervised-segmentation objective: the model's loss on its masks and the validation Dice at each image's own
resolution (the shared model building, optimiser, schedule and resume: :mod:`medseg.training.base_module`)."""

from __future__ import annotations

from typing import Any

import torch

from medseg.data.geometry import Letterbox, unletterbox_logits
from medseg.inference.sliding import sliding_window_logits
from medseg.losses import CompositeLoss
from medseg.metrics.overlap import dice_iou_torch
from medseg.models.adapters import adapter_for
from medseg.training.base_module import BaseModule


class SegmentationModule(BaseModule):
    """Wraps a registered model for training.

    Args:
        config: the run's :class:`TrainConfig` as a plain dict (stored in checkpoints as ``hyper_parameters``).
        targets: output names of a ``data.heads: per_target`` model (one output channel each); ``None``: one output.

    Batches are dicts from :class:`medseg.training.dataset.SegmentationDataset`. SAM-family models receive the
    batch's boxes and are trained with their IoU head (``iou_mse``); U-Nets ignore boxes.

    Validation scores Dice at each image's own resolution: letterboxed logits are mapped back to the image frame;
    with ``data.patch_size`` the whole native image is segmented by sliding windows (the prediction path).
    """

    def __init__(self, config: dict[str, Any], targets: list[str] | None = None) -> None:
        super().__init__(config, targets)
        self.adapter = adapter_for(self.model)  # how the model is called (its family)
        self.is_sam = self.adapter.accepts_boxes
        self.tile = self.cfg.data.patch_size
        if self.is_sam and self.tile is not None and self.tile != self.cfg.data.img_size:
            raise ValueError(f"{self.cfg.model.name} takes {self.cfg.data.img_size}² inputs: set data.patch_size to "
                             f"{self.cfg.data.img_size} (or data.img_size to {self.tile})")
        self.loss_fn = CompositeLoss(self.cfg.loss.weights, self.cfg.loss.options)

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> tuple[torch.Tensor,
                                                                                       torch.Tensor | None]:
        return self.adapter.train_forward(images, boxes)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        if self.is_task_model:  # segmented as its own task; the classifier and SPPG get their own terms
            out = self.adapter.forward_all(batch["image"], batch["target"])  # type: ignore[attr-defined]
            aux = {"patch_logits": out.patch_logits, "task_logits": out.task_logits, "task": batch["target"]}
            loss, parts = self.loss_fn(out.logits, batch["mask"], out.iou, aux)
            if not self.training:
                acc = (out.task_logits.argmax(1) == batch["target"]).float().mean()
                self.log("val/task_accuracy", acc, sync_dist=True, batch_size=batch["image"].shape[0])
            return loss, parts, out.logits
        logits, iou = self(batch["image"], batch["box"])
        logits = _own_output(logits, batch["target"])
        loss, parts = self.loss_fn(logits, batch["mask"], iou)
        return loss, parts, logits

    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, parts, _ = self._step(batch)
        return loss, parts

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        bs = batch["image"].shape[0]
        if self.tile is not None:  # whole native image, sliding windows (batch of one)
            fn = self.adapter.window_logits(self.tile, channel=int(batch["target"][0]))
            logits = sliding_window_logits(fn, batch["image"], tile=self.tile,
                                           overlap=self.cfg.data.val_overlap, batch_size=self.cfg.trainer.batch_size)
            loss, _ = self.loss_fn(logits, batch["mask"], None)
            dice = dice_iou_torch(logits[:, 0] > 0, batch["mask"][:, 0] > 0.5)[0]
        else:
            loss, _, logits = self._step(batch)
            dice = self._native_dice(logits, batch["index"])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        self.log("val/dice", dice.mean(), prog_bar=True, sync_dist=True, batch_size=bs)

    def _native_dice(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Dice per image at the image's own resolution: canvas logits cropped to the image region and resized
        back (as at prediction time), against the native-resolution ground truth of the validation cache."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        split = getattr(getattr(dm, "val_set", None), "split", None)
        if split is None:
            raise RuntimeError("validation needs the SegmentationDataModule's validation cache")
        size = logits.shape[-1]
        out = []
        for i, row in enumerate(rows.tolist()):
            gt = torch.from_numpy(split.native_mask(row)).to(logits.device)
            geo = Letterbox(tuple(gt.shape), tuple(int(v) for v in split.valid[row]), size)
            pred = unletterbox_logits(logits[i:i + 1].float(), geo)[0, 0] > 0
            out.append(dice_iou_torch(pred[None], gt[None])[0])
        return torch.cat(out)


def _own_output(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits → (B, 1, H, W): each image's own target output (K = 1: unchanged)."""
    if logits.shape[1] == 1:
        return logits
    index = target.view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:])
    return logits.gather(1, index)


