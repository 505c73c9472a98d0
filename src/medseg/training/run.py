"""One entry point for every training objective: :func:`load_run_config` reads a config whose ``objective``
(``segmentation`` | ``ssl`` | ``distill``) names its class, and :func:`fit` runs it on the one Lightning engine
(:mod:`medseg.training.fit`, :class:`medseg.training.base_module.BaseModule`).

Example::

    from medseg.training.run import fit, load_run_config

    cfg = load_run_config("configs/basic_unet.yaml", ["objective=ssl", "model.name=resnet_unet"])
    result = fit(cfg)            # result.model_dir: the model folder
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import InvalidInputError
from medseg.training.config import TrainConfig, apply_overrides, load_config

#: objective → (module, config class, run function)
OBJECTIVES: dict[str, tuple[str, str, str]] = {
    "segmentation": ("medseg.training.fit", "TrainConfig", "train"),
    "ssl": ("medseg.ssl.pretrain", "SslConfig", "pretrain"),
    "distill": ("medseg.distill.train", "DistillConfig", "distill"),
}


def _objective(name: str) -> tuple[type[TrainConfig], Any]:
    if name not in OBJECTIVES:
        raise InvalidInputError("objective", f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    module, schema, run = OBJECTIVES[name]
    mod = importlib.import_module(module)
    return (TrainConfig if schema == "TrainConfig" else getattr(mod, schema)), getattr(mod, run)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a run config of any objective (its ``objective`` key, or an ``objective=…`` override; default
    ``segmentation``) into that objective's class.

    Raises:
        InvalidInputError: unreadable YAML, an unknown objective, unknown keys or wrong types.
    """
    raw: dict[str, Any] = {}
    if path is not None and Path(path).is_file():
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError:
            loaded = None  # load_config says what is wrong, naming the file
        raw = loaded if isinstance(loaded, dict) else {}
    name = apply_overrides(dict(raw), [o for o in overrides or [] if o.split("=", 1)[0].strip() == "objective"]
                           ).get("objective", "segmentation")
    schema, _ = _objective(str(name))
    return load_config(path, overrides, schema=schema)


def fit(cfg: TrainConfig, *, resume: bool = False, **options: Any) -> Any:
    """Run ``cfg`` with its objective's trainer (``train``, ``pretrain`` or ``distill``: the same Lightning
    engine, checkpoints, resume and model folder); returns its :class:`medseg.training.fit.TrainResult`."""
    _, run = _objective(cfg.objective)
    return run(cfg, resume=resume, **options)
