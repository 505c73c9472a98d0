"""Training engine: typed YAML configs, a Lightning module/data module shared by every model, resumable
loaders, atomic checkpoints, :func:`train`, and :func:`medseg.training.run.fit` for any objective."""

from medseg.training.config import TrainConfig, apply_overrides, dump_config, load_config, stage_config
from medseg.training.fit import TrainResult, build_trainer, last_checkpoint, train
from medseg.training.run import load_run_config

__all__ = ["TrainConfig", "TrainResult", "apply_overrides", "build_trainer", "dump_config", "last_checkpoint",
           "load_config", "load_run_config", "stage_config", "train"]
