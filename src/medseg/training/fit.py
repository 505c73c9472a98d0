"""``train(config)``: one Lightning Trainer for every model, from one CPU core to multi-node DDP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from medseg.errors import MedsegError
from medseg.models.io import save_model_folder
from medseg.models.parts import takes_embeddings
from medseg.training.callbacks import CpuTimeBudget
from medseg.training.checkpoint_io import AtomicCheckpointIO
from medseg.training.config import TrainConfig, dump_config
from medseg.training.datamodule import SegmentationDataModule
from medseg.training.embedding_data import EmbeddingDataModule
from medseg.training.module import SegmentationModule
from medseg.utils.atomic import atomic_write_text
from medseg.utils.checks import check_accelerator, check_output_dir


@dataclass
class TrainResult:
    """Where things went: ``model_dir`` holds the final safetensors model; ``metrics`` the last logged values."""

    out_dir: Path
    model_dir: Path | None
    last_checkpoint: Path | None
    metrics: dict[str, float]
    global_step: int


BEST_NAME = "best"


def best_checkpoint(out_dir: str | Path) -> Path | None:
    p = Path(out_dir) / "checkpoints" / f"{BEST_NAME}.ckpt"
    return p if p.is_file() else None


def last_checkpoint(out_dir: str | Path) -> Path | None:
    p = Path(out_dir) / "checkpoints" / "last.ckpt"
    return p if p.is_file() else None


def build_trainer(cfg: TrainConfig, *, extra_callbacks: list[L.Callback] | None = None,
                  unused_parameters: bool = False, has_val: bool = False) -> L.Trainer:
    """The configured ``lightning.Trainer`` (atomic checkpoints every N steps + last, CSV and TensorBoard logs;
    with a validation set also ``checkpoints/best.ckpt`` on ``trainer.monitor`` and optional early stopping).

    ``unused_parameters``: the model has parameters that get no gradient by design (SAM family); plain ``ddp``
    then becomes ``ddp_find_unused_parameters_true``.
    """
    t = cfg.trainer
    out = Path(cfg.out_dir)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                           every_n_train_steps=t.checkpoint_every_n_steps, save_last=True, save_top_k=1,
                           monitor=None)
    callbacks: list[L.Callback] = [ckpt, LearningRateMonitor(logging_interval="step"), *(extra_callbacks or [])]
    if t.max_cpu_minutes is not None:
        callbacks.append(CpuTimeBudget(60 * t.max_cpu_minutes))
    if has_val:
        callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", filename=BEST_NAME, monitor=t.monitor,
                                         mode=t.monitor_mode, save_top_k=1, save_last=False,
                                         auto_insert_metric_name=False, enable_version_counter=False,
                                         save_on_train_epoch_end=False))
        if t.early_stopping_patience:
            callbacks.append(EarlyStopping(monitor=t.monitor, mode=t.monitor_mode,
                                           patience=t.early_stopping_patience))
    strategy = t.strategy
    if t.sync_batchnorm and t.accelerator == "cpu":
        raise MedsegError("trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm has no CPU kernels)")
    if strategy == "ddp" and unused_parameters:
        # prompt-free SAM / ESP-MedSAM training leaves the point/mask prompt paths (and the multimask heads, or the
        # bags of tasks absent from a batch in distillation) without gradients
        strategy = "ddp_find_unused_parameters_true"
    return L.Trainer(
        default_root_dir=out, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=t.precision, max_epochs=t.max_epochs, max_steps=t.max_steps, max_time=t.max_time,
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        sync_batchnorm=t.sync_batchnorm, deterministic=t.deterministic, log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval, check_val_every_n_epoch=t.check_val_every_n_epoch,
        enable_progress_bar=t.progress_bar, callbacks=callbacks,
        logger=[CSVLogger(out, name="logs"), TensorBoardLogger(out, name="tensorboard")],  # version_N per (re)start
        plugins=[AtomicCheckpointIO()], use_distributed_sampler=False, num_sanity_val_steps=0,
        enable_model_summary=False,
    )


def train(cfg: TrainConfig, *, resume: bool = False, extra_callbacks: list[L.Callback] | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; with ``resume`` continue from ``out_dir/checkpoints/last.ckpt``.

    Rank 0 writes ``out_dir/config.yaml`` and, at the end, ``out_dir/model/`` (safetensors + JSON) holding the
    best-on-validation weights (``trainer.final_weights=best``, when a validation set exists) or the last ones;
    ``model.json`` says which (``weights``, ``best_step``, ``best_score``) and, for patch training, the ``tile`` and
    ``overlap`` that ``medseg predict`` uses by default.
    """
    out = Path(cfg.out_dir)
    check_accelerator(cfg.trainer.accelerator)  # before anything is written
    check_output_dir(out)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    kind = SegmentationDataModule if cfg.data.embeddings is None else EmbeddingDataModule
    data = kind(cfg.data, batch_size=cfg.trainer.batch_size, seed=cfg.seed, cache_root=out / "cache")
    module = SegmentationModule(cfg.model_dump(mode="json"), targets=data.targets())
    if takes_embeddings(module.model) != (cfg.data.embeddings is not None):
        raise MedsegError(f"{cfg.model.name} takes {'embeddings' if cfg.data.embeddings is None else 'images'}: "
                          + ("set data.embeddings (the frozen encoder whose cached embeddings it reads)"
                             if cfg.data.embeddings is None else "unset data.embeddings"))
    has_val = bool(data.entries()[1])
    unused = module.is_sam or module.is_task_model
    trainer = build_trainer(cfg, extra_callbacks=extra_callbacks, unused_parameters=unused, has_val=has_val)
    extra: dict[str, object] = {"seed": cfg.seed}
    if cfg.data.patch_size is not None:  # trained on native-resolution patches: predict with sliding windows
        extra.update(tile=cfg.data.patch_size, overlap=cfg.data.val_overlap)
    if cfg.data.edge != "none":  # trained on edge images: prediction filters its inputs the same way
        extra["edge"] = cfg.data.edge
    if cfg.data.color != "rgb":  # trained on grey images: prediction converts its inputs too
        extra["color"] = cfg.data.color
    if module.targets is not None:  # one output per target, in this order
        extra["targets"] = module.targets
    if cfg.data.embeddings is not None:  # reads this encoder's embeddings
        emb = cfg.data.embeddings
        extra["encoder"] = {"name": emb.encoder, "options": emb.options}
    return fit_and_save(cfg, trainer, module, data, resume=resume, extra=extra)


def fit_and_save(cfg: TrainConfig, trainer: L.Trainer, module: L.LightningModule, data: L.LightningDataModule, *,
                 resume: bool, extra: dict[str, object]) -> TrainResult:
    """The common tail of every training stage: write ``config.yaml``, fit (resuming from ``last.ckpt``), and on
    rank 0 save ``out_dir/model/`` with the best-on-validation weights (``trainer.final_weights=best``, when a
    best checkpoint exists) or the last ones. ``module`` exposes ``model`` and ``model_options``."""
    out = Path(cfg.out_dir)
    if trainer.is_global_zero:
        atomic_write_text(out / "config.yaml", dump_config(cfg))
    ckpt = last_checkpoint(out) if resume else None
    trainer.fit(module, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    model_dir = None
    if trainer.is_global_zero:
        extra = {**extra, "trained_steps": int(trainer.global_step), "weights": "last"}
        best = best_checkpoint(out)
        if cfg.trainer.final_weights == "best" and best is not None:
            state = torch.load(best, map_location="cpu", weights_only=True)
            module.load_state_dict(state["state_dict"])
            states = state.get("callbacks", {}).values()
            score = next((s.get("best_model_score") for s in states
                          if isinstance(s, dict) and s.get("monitor") == cfg.trainer.monitor), None)
            extra.update(weights="best", best_step=int(state.get("global_step", -1)), monitor=cfg.trainer.monitor,
                         best_score=None if score is None else float(score))
        model_dir = save_model_folder(module.model, out / "model", name=cfg.model.name,
                                      options=module.model_options, img_size=cfg.data.img_size, extra=extra)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return TrainResult(out, model_dir, last_checkpoint(out), metrics, int(trainer.global_step))
