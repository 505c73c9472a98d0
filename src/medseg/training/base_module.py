"""What every medseg LightningModule shares, written once: building the model from ``cfg.model`` (registered
builder, ``init`` weights, ``freeze``), the optimiser and schedule of ``cfg.optim``, marking a batch consumed for an
exact resume, the RNG state in checkpoints, and the training-loss logs.

An *objective* subclasses :class:`BaseModule` and overrides only its step — :meth:`BaseModule.training_loss` and
``validation_step`` — and, where the optimiser drives more than ``self.model``, :meth:`BaseModule.optimized`:

===========================================  ===================================================================
:class:`medseg.training.module.SegmentationModule`   supervised segmentation (images or cached embeddings)
:class:`medseg.ssl.pretrain.SslModule`                self-supervised encoder pre-training (SimSiam / BYOL / DINO)
:class:`medseg.distill.train.DistillModule`           encoder distillation to a teacher's cached embeddings
===========================================  ===================================================================
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from medseg.models import build_model, builder_options, sized_options
from medseg.models.parts import is_task_model
from medseg.training.config import ModelConfig, TrainConfig
from medseg.training.optim import parameter_groups

#: builder options that only initialise weights (dropped from what rebuilds the architecture)
INIT_ONLY_OPTIONS = frozenset({"pretrained", "weights", "cache_dir", "weights_sha256", "encoder_init"})


class BaseModule(L.LightningModule):
    """The shared part of every objective.

    Args:
        config: the run's config (a :class:`TrainConfig` subclass, ``schema``) as a plain dict; stored in
            checkpoints as ``hyper_parameters``.
        targets: output names (one per target) or a task model's tasks; ``None``: one output.
    """

    #: the config class of the objective
    schema: ClassVar[type[TrainConfig]] = TrainConfig
    #: the validation metric a ``plateau`` schedule follows by default (``optim.plateau_monitor: auto``)
    val_loss_key: ClassVar[str] = "val/loss"

    def __init__(self, config: dict[str, Any], targets: list[str] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config, "targets": targets})
        self.cfg = self.schema.model_validate(config)
        self.targets = targets
        self.model, self.model_options = build_run_model(self.cfg.model, self.cfg.data.img_size, targets)
        self.is_task_model = is_task_model(self.model)
        self.frozen = freeze_modules(self.model, self.cfg.model.freeze)

    # ---- the objective ----------------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, named parts logged as ``train/loss_<name>``) of one training batch."""
        raise NotImplementedError

    def optimized(self) -> nn.Module:
        """The module whose trainable parameters the optimiser updates (``self.model``; SSL: the method)."""
        return self.model

    # ---- shared steps -----------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: object, batch_idx: int) -> None:
        """Frozen submodules (``model.freeze``) run in eval mode: Lightning switches whole modules to train mode
        (and restores saved modes after validation), so this is enforced before every step."""
        for m in self.frozen:
            m.eval()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts = self.training_loss(batch)
        bs = batch["image"].shape[0]  # every objective's batches carry ``image`` (a cached embedding for a head)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, batch_size=bs)
        # here, not in on_train_batch_end: Lightning's checkpoint callback runs before the module's hook there
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        if hasattr(loader, "mark_consumed"):
            loader.mark_consumed(batch_idx)
        return loss

    def configure_optimizers(self) -> Any:
        """AdamW on :meth:`optimized`'s trainable parameters (``optim.lr_multipliers`` per prefix) with
        ``optim.scheduler``: ``cosine`` (per step, after ``warmup_steps`` of linear warm-up, over ``max_steps`` or
        the epochs' steps), ``plateau`` (per epoch on ``plateau_monitor``) or ``none``."""
        o = self.cfg.optim
        groups = parameter_groups(self.optimized(), o.lr, o.lr_multipliers)
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
        return self.val_loss_key if getattr(dm, "val_set", None) is not None else "train/loss_epoch"

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


def build_run_model(m: ModelConfig, img_size: int, targets: list[str] | None = None
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a run and the options that rebuild it (initialisation-only options such as ``pretrained``
    dropped): a task model gets ``targets`` as its tasks; any other model with ``targets`` one output channel per
    target; ``m.init`` weights are loaded (``m.init_mode``).

    Raises:
        ValueError: a task model without targets, or targets for a model with a single output.
    """
    opts = sized_options(m.name, img_size, m.options)
    if is_task_model(m.name):  # one task per target (ESP-MedSAM, the prompt-free head)
        if targets is None:
            raise ValueError(f"{m.name} segments one task per target: set data.heads=per_target")
        opts["tasks"] = list(targets)
    elif targets is not None:
        if "out_channels" not in builder_options(m.name):
            raise ValueError(f"{m.name} has one output: data.heads=per_target needs a U-Net")
        opts["out_channels"] = len(targets)
    model = build_model(m.name, **opts)
    if m.init is not None:
        kept = init_from_folder(model, m.init, m.init_mode)
        if kept and m.init_mode != "encoder":  # encoder-only transfer keeps the decoder by design
            warnings.warn(f"model.init: {len(kept)} tensors not in {m.init} keep their initialisation, "
                          f"e.g. {kept[:3]}", stacklevel=3)
    return model, {k: v for k, v in opts.items() if k not in INIT_ONLY_OPTIONS}


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
    from medseg.models import load_state_matching

    left_out = set(load_state_matching(model, state))
    loaded = set(state) - left_out
    if not loaded:
        raise MedsegError(f"{folder}: no weights in common with {type(model).__name__}")
    return sorted(set(own) - loaded)


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
