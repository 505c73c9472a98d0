"""The LightningModule shared by every model: loss, optimiser, scheduler, logging, validation Dice."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from medseg.data.geometry import Letterbox, unletterbox_logits
from medseg.inference.sliding import model_logits, sliding_window_logits
from medseg.losses import CompositeLoss
from medseg.metrics.overlap import dice_iou_torch
from medseg.models import build_model, builder_options, sized_options
from medseg.models.parts import is_task_model
from medseg.training.config import TrainConfig
from medseg.training.optim import parameter_groups

INIT_ONLY_OPTIONS = frozenset({"pretrained", "weights", "cache_dir", "weights_sha256", "encoder_init"})


class SegmentationModule(L.LightningModule):
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
        super().__init__()
        self.save_hyperparameters({"config": config, "targets": targets})
        self.cfg = TrainConfig.model_validate(config)
        self.targets = targets
        opts = sized_options(self.cfg.model.name, self.cfg.data.img_size, self.cfg.model.options)
        task_model = is_task_model(self.cfg.model.name)  # one task per target (ESP-MedSAM)
        if task_model and targets is None:
            raise ValueError(f"{self.cfg.model.name} segments one task per target: set data.heads=per_target")
        if task_model:
            opts["tasks"] = list(targets or [])
        elif targets is not None:
            if "out_channels" not in builder_options(self.cfg.model.name):
                raise ValueError(f"{self.cfg.model.name} has one output: data.heads=per_target needs a U-Net")
            opts["out_channels"] = len(targets)
        self.model = build_model(self.cfg.model.name, **opts)
        if self.cfg.model.init is not None:
            kept = init_from_folder(self.model, self.cfg.model.init, self.cfg.model.init_mode)
            if kept and self.cfg.model.init_mode != "encoder":  # encoder-only transfer keeps the decoder by design
                import warnings

                warnings.warn(f"model.init: {len(kept)} tensors not in {self.cfg.model.init} keep their "
                              f"initialisation, e.g. {kept[:3]}", stacklevel=2)
        # what rebuilds the architecture (initialisation-only options such as ``pretrained`` are dropped)
        self.model_options = {k: v for k, v in opts.items() if k not in INIT_ONLY_OPTIONS}
        self.is_sam = bool(getattr(self.model, "accepts_boxes", False))
        self.is_task_model = task_model
        self.tile = self.cfg.data.patch_size
        if self.is_sam and self.tile is not None and self.tile != self.cfg.data.img_size:
            raise ValueError(f"{self.cfg.model.name} takes {self.cfg.data.img_size}² inputs: set data.patch_size to "
                             f"{self.cfg.data.img_size} (or data.img_size to {self.tile})")
        self.loss_fn = CompositeLoss(self.cfg.loss.weights, self.cfg.loss.options)
        self.frozen = freeze_modules(self.model, self.cfg.model.freeze)

    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        """Frozen submodules (``model.freeze``) run in eval mode: Lightning switches whole modules to train mode
        (and restores saved modes after validation), so this is enforced before every step."""
        for m in self.frozen:
            m.eval()

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> tuple[torch.Tensor,
                                                                                       torch.Tensor | None]:
        if self.is_sam:
            return self.model(images, boxes=boxes, return_iou=True)
        return self.model(images), None

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        if self.is_task_model:  # segmented as its own task; the classifier and SPPG get their own terms
            out = self.model.forward_all(batch["image"], batch["target"])
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

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts, _ = self._step(batch)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, batch_size=bs)
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        if hasattr(loader, "mark_consumed"):
            loader.mark_consumed(batch_idx)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        bs = batch["image"].shape[0]
        if self.tile is not None:  # whole native image, sliding windows (batch of one)
            fn = model_logits(self.model, self.tile, int(batch["target"][0]))
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

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        groups = parameter_groups(self.model, o.lr, o.lr_multipliers)
        opt = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        if o.scheduler == "none":
            return opt
        if o.scheduler == "plateau":
            monitor = self._plateau_monitor()
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min" if "loss" in monitor else "max",
                                                               factor=o.plateau_factor, patience=o.plateau_patience)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": monitor,
                                                       "interval": "epoch", "frequency": 1}}
        total = self._total_steps()
        warm = min(o.warmup_steps, total - 1)

        def lam(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(total - warm, 1)
            return 0.5 * (1 + math.cos(min(t, 1.0) * math.pi))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _plateau_monitor(self) -> str:
        m = self.cfg.optim.plateau_monitor
        if m != "auto":
            return m
        dm = self.trainer.datamodule if self._trainer is not None else None
        return "val/loss" if getattr(dm, "val_set", None) is not None else "train/loss_epoch"

    def _total_steps(self) -> int:
        """Optimiser steps of the whole run, computed from the config and the data set size.

        (``trainer.estimated_stepping_batches`` would set up the train loader before a checkpoint is restored,
        and Lightning then skips restoring the loader's position.)
        """
        t = self.cfg.trainer
        if t.max_steps and t.max_steps > 0:
            return t.max_steps
        dm = self.trainer.datamodule
        n = len(dm.train_set) if dm is not None and getattr(dm, "train_set", None) is not None else 1
        per_rank = math.ceil(n / max(self.trainer.world_size, 1))
        batches = math.ceil(per_rank / t.batch_size)
        return max(1, math.ceil(batches / t.accumulate_grad_batches) * t.max_epochs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["medseg_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["medseg_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("medseg_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])


def _own_output(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits → (B, 1, H, W): each image's own target output (K = 1: unchanged)."""
    if logits.shape[1] == 1:
        return logits
    index = target.view(-1, 1, 1, 1).expand(-1, 1, *logits.shape[2:])
    return logits.gather(1, index)


def init_from_folder(model: torch.nn.Module, folder: str | Path, mode: str = "strict") -> list[str]:
    """Load the weights of a model folder into ``model`` (hash-checked).

    Args:
        mode: ``strict`` (the architectures must match exactly), ``shared`` (every tensor whose name and shape
            match is loaded; the others keep their initialisation) or ``encoder`` (exactly the tensors under the
            model's ``encoder_prefix``; the decoder keeps its initialisation).

    Returns:
        The names of ``model``'s tensors left as built (empty in strict mode).

    Raises:
        MedsegError / InvalidInputError: unreadable folder, hash mismatch, different architecture (strict), or no
            tensor in common (shared).
    """
    from medseg.errors import MedsegError
    from medseg.models import load_state_strict
    from medseg.models.io import load_model

    state = load_model(folder).model.state_dict()
    if mode == "strict":
        load_state_strict(model, state, str(folder))
        return []
    own = model.state_dict()
    if mode == "encoder":
        from medseg.models.parts import encoder_prefix

        prefix = encoder_prefix(model) + "."
        mine = {k for k in own if k.startswith(prefix)}
        theirs = {k: v for k, v in state.items() if k.startswith(prefix)}
        bad = sorted(k for k in mine if k not in theirs or theirs[k].shape != own[k].shape)
        if bad or set(theirs) - mine:
            raise MedsegError(f"{folder}: its encoder does not match {type(model).__name__}'s "
                              f"(missing or differently shaped: {bad[:3]}, extra: {sorted(set(theirs) - mine)[:3]})")
        model.load_state_dict(theirs, strict=False)
        return sorted(set(own) - mine)
    common = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not common:
        raise MedsegError(f"{folder}: no weights in common with {type(model).__name__}")
    model.load_state_dict(common, strict=False)
    return sorted(set(own) - set(common))


def freeze_modules(model: torch.nn.Module, names: list[str]) -> list[torch.nn.Module]:
    """Turn off the gradients of the named submodules; returns them (to keep them in eval mode).

    Raises:
        ValueError: a name is not a submodule of ``model`` (the message lists the top-level ones).
    """
    modules = dict(model.named_modules())
    out = []
    for name in names:
        if name not in modules or not name:
            raise ValueError(f"model.freeze: {name!r} is not a submodule of {type(model).__name__} "
                             f"(top level: {', '.join(n for n, _ in model.named_children())})")
        modules[name].requires_grad_(False)
        out.append(modules[name])
    return out
