"""Typed training configuration, loaded from YAML with dotted command-line overrides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medseg.data.augment import AugmentOptions
from medseg.errors import InvalidInputError

C = TypeVar("C", bound=BaseModel)


class Strict(BaseModel):
    """A config section: an unknown key is an error (:func:`load_config` names the file and the field)."""

    model_config = ConfigDict(extra="forbid")


#: a fixed view of the cached training images (:data:`medseg.training.embedding_cache.VIEWS`)
EmbeddingView = Literal["none", "hflip", "vflip", "jitter1", "jitter2", "zoom1"]


class EmbeddingOptions(Strict):
    """Which fixed views of the training images a frozen encoder's embedding cache holds
    (:mod:`medseg.training.embedding_cache`) and how the encoder runs
    (:func:`medseg.inference.engines.prepare_engine`)."""

    views: list[EmbeddingView] = Field(default_factory=lambda: ["none", "hflip"], min_length=1)
    engine: Literal["eager", "optimized", "onnx"] = "optimized"
    batch_size: int = Field(1, ge=1)


class EmbeddingSource(EmbeddingOptions):
    """Train on a frozen encoder's cached embeddings instead of images (:mod:`medseg.training.embedding_data`): the
    image encoder of the registered model ``encoder`` built with ``options`` (e.g. ``{pretrained: true}``: the
    published LiteMedSAM weights, or a checkpoint path) encodes every training and validation image once, and each
    of ``views`` of the training images (:class:`EmbeddingOptions`). Rows of ``exclude_datasets`` are left out of
    training and validation while staying in the caches. The model must take embeddings (``prompt_free_head``)."""

    encoder: str = "lite_medsam"
    options: dict[str, Any] = Field(default_factory=lambda: {"pretrained": True})
    exclude_datasets: list[str] = Field(default_factory=list)


class DataConfig(Strict):
    """Where the images are and how they become model input.

    ``root`` holds ``<modality>/<dataset>/images|masks`` folders (see ``medseg data scan``); ``manifest`` is an
    alternative CSV with a ``split`` column (``medseg data split``). Without a manifest, a seeded
    modality/dataset-stratified, group-aware ``val_fraction`` is held out (``group_rules``: dataset → rule, see
    :mod:`medseg.data.splits`).

    Two input modes:

    * letterbox (``patch_size: null``): every image is letterboxed to ``img_size``² (the SAM family's canvas);
    * native resolution (``patch_size: P``): training on random P×P patches of the images at their own size, a share
      ``foreground_oversample`` of them centred on foreground (nnU-Net: one third); ``patches_per_epoch`` draws per
      epoch (default: one per training image); validation by sliding ``P``-windows over whole images
      (``val_overlap``). SAM-family models need P = ``img_size``. The saved model records ``tile: P``, so
      ``medseg predict`` segments at native resolution by default. ``sampling`` picks each patch's image:
      ``image`` (uniform over training images) or ``dataset`` (a dataset uniformly, then an image of it — so a
      16-image dataset is not drowned by a 600-image one in a universal model).

    ``augment``: see :class:`medseg.data.augment.AugmentOptions` (all seeded by draw; 90° rotations and the affine
    apply to patches only).

    ``edge``: train on the edge magnitude of every image (:mod:`medseg.ops.edges`; CMMC's edge-enhanced
    pre-training) instead of the image itself; the saved model records it and prediction applies it too.
    ``color: grey`` trains on the BT.601 grey image (in all three channels; before ``edge``), recorded and applied
    the same way (:func:`medseg.ops.prepare_input`).

    ``heads: per_target`` gives a model trained on several datasets one output per *target* (what is segmented),
    so that different targets of one modality (retinal vessels vs. optic disc) stay apart: each image's loss and
    validation use its target's output only. A dataset's target is its name unless ``target_of`` maps it to a
    shared one (e.g. ``{ph2: skin-lesion, isic2017: skin-lesion}``). The saved model lists its ``targets``.
    """

    root: Path | None = None
    manifest: Path | None = None
    img_size: int = 256
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    group_rules: dict[str, str] = Field(default_factory=dict)
    modalities: list[str] | None = None
    #: at most this many images per (modality, dataset): a seeded sample (:func:`medseg.data.cap_per_dataset`)
    max_per_dataset: int | None = Field(None, ge=1)
    mask_mode: Literal["strict", "nonzero", "labels"] = "nonzero"
    cache_dir: Path | None = None
    patch_size: int | None = Field(None, ge=16)
    foreground_oversample: float = Field(1 / 3, ge=0.0, le=1.0)
    patches_per_epoch: int | None = Field(None, ge=1)
    sampling: Literal["image", "dataset"] = "image"
    val_overlap: float = Field(0.25, ge=0.0, lt=1.0)
    augment: AugmentOptions = Field(default_factory=AugmentOptions)
    edge: Literal["none", "kirsch", "sobel", "prewitt", "scharr", "laplacian"] = "none"
    color: Literal["rgb", "grey"] = "rgb"
    heads: Literal["single", "per_target"] = "single"
    target_of: dict[str, str] = Field(default_factory=dict)
    box_prompt: Literal["gt", "whole"] = "gt"
    box_shift: int = 5
    num_workers: int = 0
    #: train a head on a frozen encoder's cached embeddings (:class:`EmbeddingSource`); ``null``: on images
    embeddings: EmbeddingSource | None = None


class ModelSpec(Strict):
    """A registered model (``medseg models`` lists them) and its builder options."""

    name: str = "basic_unet"
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(ModelSpec):
    """A :class:`ModelSpec` to train; ``init``: start from the weights of a model folder (from ``medseg train`` or
    distillation; hash-checked, same architecture)."""

    init: Path | None = None
    #: ``strict``: ``init``'s architecture must match exactly; ``shared``: load every tensor whose name and shape
    #: match, keep the rest as built (e.g. an ablation variant without a part, started from the full model);
    #: ``encoder``: the encoder's tensors only (``encoder_prefix``; all must match), the decoder as built
    #: (encoder-only transfer after self-supervised pre-training)
    init_mode: Literal["strict", "shared", "encoder"] = "strict"
    #: submodules (names as in ``model.named_modules()``, e.g. ``image_encoder``) kept fixed: no gradient, no
    #: optimiser state, normalisation statistics frozen (eval mode)
    freeze: list[str] = Field(default_factory=list)


class LossConfig(Strict):
    """Loss name → weight, plus per-loss constructor options."""

    weights: dict[str, float] = Field(default_factory=lambda: {"dice": 1.0, "bce": 1.0})
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)


class OptimConfig(Strict):
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: Literal["none", "cosine", "plateau"] = "cosine"
    warmup_steps: int = 0
    #: parameter-name prefix → factor on ``lr`` (new parts of a pretrained model learn faster), e.g.
    #: ``{classifier: 10}``; :func:`medseg.training.optim.parameter_groups`
    lr_multipliers: dict[str, float] = Field(default_factory=dict)
    # ReduceLROnPlateau, stepped once per epoch on an epoch metric ("auto": val/loss with a validation set,
    # else the epoch-mean training loss train/loss_epoch)
    plateau_monitor: str = "auto"
    plateau_factor: float = Field(0.9, gt=0.0, lt=1.0)
    plateau_patience: int = Field(5, ge=0)


class HardwareConfig(Strict):
    """Where and how precisely a run computes (``lightning.Trainer``'s own options)."""

    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    progress_bar: bool = True


class TrainerConfig(HardwareConfig):
    """Options passed to ``lightning.Trainer`` (CPU / GPU / multi-GPU / multi-node via its own strategies):
    :class:`HardwareConfig` plus the run's length, checkpoints, validation and model selection."""

    max_epochs: int = 10
    max_steps: int = -1
    max_time: str | None = None  # "DD:HH:MM:SS" wall-clock cap (Lightning's max_time)
    # CPU-time cap of the training process (user + system, all threads; summed over resumes): 30 minutes on
    # 2 cores = 60; the same work on a quiet and on a shared machine (medseg.training.callbacks.CpuTimeBudget)
    max_cpu_minutes: float | None = Field(None, gt=0)
    batch_size: int = 8
    accumulate_grad_batches: int = 1
    num_nodes: int = 1
    sync_batchnorm: bool = False
    checkpoint_every_n_steps: int = 50
    log_every_n_steps: int = 10
    val_check_interval: float | int | None = None
    check_val_every_n_epoch: int | None = 1
    deterministic: bool = False
    gradient_clip_val: float | None = None
    # model selection on the validation set: checkpoints/best.ckpt tracks `monitor`; the final model folder
    # holds the best weights (final_weights=best) or the last ones; optional early stopping on `monitor`
    monitor: str = "val/dice"
    monitor_mode: Literal["max", "min"] = "max"
    final_weights: Literal["best", "last"] = "best"
    early_stopping_patience: int | None = Field(None, ge=1)


class TrainConfig(Strict):
    """The whole run: ``out_dir`` receives checkpoints, logs and the final model folder.

    The shared parts (``data``, ``model``, ``optim``, ``trainer``) plus the ``objective`` that trains them:
    ``segmentation`` (this class: ``loss`` on the masks, images or a frozen encoder's cached embeddings via
    ``data.embeddings``), ``ssl`` (:class:`medseg.ssl.pretrain.SslConfig`: ``method``) or ``distill``
    (:class:`medseg.distill.DistillConfig`: ``teacher``). :func:`medseg.training.load_run_config` picks the class
    from ``objective`` and :func:`medseg.training.fit` runs any of them.
    """

    objective: Literal["segmentation"] = "segmentation"
    out_dir: Path = Path("runs/default")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


def refuse_unused_sections(data: Any, objective: str) -> Any:
    """For objectives whose loss is their own and that train on images (SSL, distillation): a ``loss`` section other
    than the default, or ``data.embeddings``, is an error, not silently ignored. Use as a
    ``model_validator(mode="before")``."""
    if isinstance(data, dict) and data.get("loss") is not None:
        given = data["loss"] if isinstance(data["loss"], LossConfig) else LossConfig.model_validate(data["loss"])
        if given != LossConfig():
            raise ValueError(f"loss does not apply to {objective} (its loss is fixed); remove the loss section")
    section = data.get("data") if isinstance(data, dict) else None
    embeddings = section.get("embeddings") if isinstance(section, dict) else getattr(section, "embeddings", None)
    if embeddings is not None:
        raise ValueError(f"data.embeddings does not apply to {objective} (it trains on images); remove it")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: ``3``, ``1e-4``, ``[1, 2]``, ``true``, ``null``)."""
    for item in overrides:
        if "=" not in item:
            raise InvalidInputError("<overrides>", f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InvalidInputError("<overrides>", f"{key}: {_yaml_problem(exc)}") from exc
        set_path(raw, key, parsed)
    return raw


def set_path(raw: dict[str, Any], key: str, value: Any, source: str = "<overrides>") -> dict[str, Any]:
    """Set ``a.b.c`` of a nested config mapping to ``value`` (sections created as needed); returns ``raw``."""
    parts = key.strip().split(".")
    node = raw
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise InvalidInputError(source, f"{key}: {p} is not a section")
    node[parts[-1]] = value
    return raw


def stage_config(schema: type[C], patch: Mapping[str, Any]) -> C:
    """The config of one experiment stage: ``schema``'s defaults with a typed ``patch`` (dotted field path →
    value, e.g. ``{"optim.lr": 2e-4, "model.options": {...}}``; a later key wins) applied and validated — the
    experiments' counterpart of ``medseg train``'s command-line overrides, without a text round trip.

    Raises:
        InvalidInputError: an unknown field or a wrong type, naming the field (``<stage>``).
    """
    raw: dict[str, Any] = {}
    for key, value in patch.items():
        set_path(raw, key, value, "<stage>")
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInputError("<stage>", f"{'.'.join(str(x) for x in first['loc'])}: {first['msg']}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the YAML parser objects to and where (not its multi-line dump)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML: {problem}" + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type[BaseModel] = TrainConfig) -> Any:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides; ``schema`` is the
    config class (:class:`TrainConfig`, a subclass for method-specific stages such as distillation, or an
    experiment's config).

    Raises:
        InvalidInputError: unreadable YAML, unknown keys or wrong types — naming the file and the field.
    """
    raw: dict[str, Any] = {}
    src = str(path) if path is not None else "<defaults>"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise InvalidInputError(src, f"cannot read config: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise InvalidInputError(src, f"cannot read config: {_yaml_problem(exc)}") from exc
        if not isinstance(raw, dict):
            raise InvalidInputError(src, "config must be a mapping")
    raw = apply_overrides(raw, overrides or [])
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        given = [o.split("=", 1)[0].strip() for o in overrides or []]
        if any(where == k or where.startswith(k + ".") for k in given):  # the command line's, not the file's
            raise InvalidInputError("<command line>", f"{where}: {first['msg']}") from exc
        raise InvalidInputError(src, f"{where}: {first['msg']}") from exc


def dump_config(cfg: TrainConfig) -> str:
    """YAML text of a config (paths as strings)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
