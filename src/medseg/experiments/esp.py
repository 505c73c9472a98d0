"""ESP-MedSAM end to end (``medseg experiment esp-medsam CONFIG``): split → adapt the teacher → MMDKD → train
ESP-MedSAM → score the test images → report.

Every stage writes into ``out_dir/<stage>/`` and is skipped when its output exists; a killed training stage resumes
from its ``last.ckpt``; each stage records the config sections it was built from (``settings.json``). Stages:

=====================  ===============================================================================================
``split.csv``          as CMMC's (:class:`medseg.experiments.base.StagedExperiment`)
``teacher/``           ``esp_medsam_teacher``: LiteMedSAM's encoder frozen (``image_encoder.encoder``) with one shared
                       parameter bag (prefix tokens + parallel MLPs), SPPG and QDMD, trained on every task of the
                       training split with ``loss`` (λ·focal + (1−λ)·Dice, plus the SPPG and classifier terms)
``mmdkd/``             ``esp_medsam`` student: the shared encoder distilled from LiteMedSAM's (common), each task's
                       bag from the adapted teacher (specific), both from cached embeddings (:mod:`medseg.distill`)
``esp/``               ESP-MedSAM trained from ``mmdkd/`` with ``loss``
``classifier/``        ``esp/`` with its task classifier's head refitted on the frozen features of every training
                       image and its flips, the step chosen on the validation split (``classifier``;
                       :mod:`medseg.training.task_classifier`; ``fit.json``, ``history.csv``). ``model/`` is the
                       model to use (``classifier: null``: ``esp/model`` is)
``scores/``            per-image Dice / NSD (τ = 2 px) / HD95 at native resolution on the test images: ESP-MedSAM
                       with its own task choice (``esp.csv``, with the chosen ``task``) and with the true task
                       (``esp_true_task.csv``), LiteMedSAM with ground-truth boxes and with the image-region box
``unseen/``            with ``unseen``: the pipeline teacher → scores again without the held-out datasets' training
                       and validation images, scored on their test images and (the control) on the other datasets'
``ablation-<v>/``      with ``ablations``: ESP-MedSAM trained and scored with one part switched off, reusing the
                       full model's teacher and MMDKD (``no_teacher_adaptation`` distils its own bags)
``ablation-from_head/``  ``head_init/`` (the MMDKD student with the decoder of a trained prompt-free head, ``head``)
                       and ESP-MedSAM trained from it: does the ``universal`` head lift ESP-MedSAM?
``report/``            source-domain table, task-classification accuracy per dataset and what a wrong task costs,
                       the unseen-domain table and its control, the ablation (paired bootstrap interval and Wilcoxon
                       p of each change), wall time per stage, ``report.md``
=====================  ===============================================================================================

Where the paper distils the shared encoder on SA-1B natural images, we use the training images (SA-1B cannot be
shipped); the paper's teacher is SAM ViT-B with LoRA-style tokens, ours LiteMedSAM (the weights we have). A task is
a (modality, target) pair named by ``data.target_of`` (default: the dataset name).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from medseg.data import CatalogEntry, target_name
from medseg.errors import MedsegError
from medseg.evaluation import format_markdown_table, write_csv
from medseg.experiments.base import (
    ExperimentData,
    ExperimentSplit,
    StageConfig,
    StagedExperiment,
    Strict,
    TrainerOptions,
)
from medseg.metrics import group_means
from medseg.models.io import is_model_folder, read_model_meta
from medseg.training.config import stage_config
from medseg.training.task_classifier import EncoderRefitConfig


class EspConfig(Strict):
    """The whole experiment (see the module docstring); paths relative to the working directory."""

    out_dir: Path = Path("runs/esp-medsam")
    seed: int = 2024
    data: ExperimentData = Field(default_factory=ExperimentData)
    split: ExperimentSplit = Field(default_factory=ExperimentSplit)
    teacher_weights: str | None = None  # LiteMedSAM checkpoint (default: the registered weights)
    teacher: StageConfig = Field(default_factory=lambda: StageConfig(steps=200, lr=1e-4,
                                                                     freeze=["image_encoder.encoder"]))
    mmdkd: StageConfig = Field(default_factory=lambda: StageConfig(steps=200, lr=5e-4))
    train: StageConfig = Field(default_factory=lambda: StageConfig(steps=200, lr=1e-4))
    common_weight: float = Field(1.0, ge=0)
    specific_weight: float = Field(1.0, ge=0)
    #: the paper's λ·focal + (1 − λ)·Dice with λ = 0.7, plus SPPG's patch BCE and the task classifier's CE
    loss: dict[str, float] = Field(default_factory=lambda: {"focal": 0.7, "dice": 0.3, "patch_bce": 1.0,
                                                            "task_ce": 1.0})
    #: second phase of the task classifier's training: its head refitted on frozen features of the whole training
    #: split (``null``: keep the head trained jointly in ``esp/``)
    classifier: EncoderRefitConfig | None = Field(default_factory=EncoderRefitConfig)
    student: dict[str, Any] = Field(default_factory=dict)  # esp_medsam options (bags, patch size; test scale)
    teacher_model: dict[str, Any] = Field(default_factory=dict)  # esp_medsam_teacher options (test scale)
    lite_medsam: dict[str, Any] = Field(default_factory=dict)  # lite_medsam options (test scale: smaller)
    trainer: TrainerOptions = Field(default_factory=TrainerOptions)
    baseline: bool = True  # also score LiteMedSAM with ground-truth boxes and with the image-region box
    #: datasets kept out of every training stage (teacher, MMDKD, ESP-MedSAM) of a second pipeline, then scored as
    #: unseen domains, segmented as the task their target shares with a training dataset (e.g. chasedb1 → the
    #: vessel task learnt on drive)
    unseen: list[str] = Field(default_factory=list)
    #: variants trained and scored beside the full model: ``no_teacher_adaptation`` (bags distilled from the plain
    #: LiteMedSAM encoder), ``no_bags`` (the shared encoder alone), ``no_sppg``, ``no_qdmd`` (one query for all);
    #: ``seed_replicate`` is the full model's ESP-MedSAM training again with ``seed + 1`` (same split, same MMDKD
    #: start): how much one training varies, the yardstick for the other rows' changes; ``sppg_sam_mask``: the
    #: SPPG's dense prompt encoded by SAM's pretrained mask prompt encoder instead of a fresh DP encoder
    #: (``dense_prompt`` of :func:`medseg.models.builders.esp_medsam`)
    #: ``from_head``: the full model's ESP-MedSAM training again, its decoder (prompt encoder, SPPG, QDMD and the
    #: matching classifier parts) started from the trained prompt-free head ``head`` instead of LiteMedSAM's decoder
    #: and fresh SPPG / queries (encoder and bags from the same MMDKD model); the student takes the head's SPPG
    #: design too (``dense_prompt: sam_mask``, the head's default)
    ablations: list[Literal["no_teacher_adaptation", "no_bags", "no_sppg", "no_qdmd", "seed_replicate",
                            "sppg_sam_mask", "from_head"]] = Field(default_factory=list)
    #: the trained head of ``from_head``: ``universal`` (the model shipped with medseg), a ``universal`` model folder
    #: (its ``head/`` part, checked against the folder's pins) or a ``prompt_free_head`` model folder. Its tasks
    #: must be this experiment's, and its training images none of this split's test images (``split.keep`` caps a
    #: split after splitting, so the ``universal`` split's parts stay apart)
    head: str | None = None


STAGE_INPUTS: dict[str, tuple[str, ...]] = dict(StagedExperiment.STAGE_INPUTS)
STAGE_INPUTS["teacher"] = (*STAGE_INPUTS["split"], "teacher_weights", "teacher", "teacher_model", "loss")
STAGE_INPUTS["mmdkd"] = (*STAGE_INPUTS["teacher"], "lite_medsam", "student", "mmdkd", "common_weight",
                         "specific_weight")
STAGE_INPUTS["esp"] = (*STAGE_INPUTS["mmdkd"], "train")
STAGE_INPUTS["classifier"] = (*STAGE_INPUTS["esp"], "classifier")
STAGE_INPUTS["scores-esp"] = STAGE_INPUTS["classifier"]  # esp.csv: the task the classifier chooses
STAGE_INPUTS["split-unseen"] = (*STAGE_INPUTS["split"], "unseen")
STAGE_INPUTS["head_init"] = (*STAGE_INPUTS["mmdkd"], "head")  # the MMDKD student with the head's decoder
STAGE_INPUTS["esp-head"] = (*STAGE_INPUTS["esp"], "head")
#: ablation variants that change the ESP-MedSAM model: its option changes, and the parameter-name prefix of the part
#: it removes (``None``: none). Such a variant starts from the MMDKD model's matching tensors (``init_mode: shared``).
MODEL_VARIANTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "no_bags": ({"use_bags": False}, "image_encoder.controller"),
    "no_sppg": ({"use_sppg": False}, "patch_prompt"),
    "no_qdmd": ({"use_qdmd": False}, None),
    "sppg_sam_mask": ({"dense_prompt": "sam_mask"}, None),
}
# the held-out pipeline's stages also depend on what was held out
for _k in ("teacher", "mmdkd", "esp", "classifier", "scores-esp"):
    STAGE_INPUTS[f"{_k}-unseen"] = (*STAGE_INPUTS[_k], "unseen")


STAGES = ("split", "teacher", "mmdkd", "esp", "classifier")


@dataclass(frozen=True)
class Pipeline:
    """One pipeline of the experiment, declared in :func:`pipelines` rather than switched by flags: where it writes,
    which stages it trains itself (the others are the main pipeline's, reused), what it holds out, how its
    ESP-MedSAM differs from the full model, and what its ``scores/`` holds."""

    #: sub-folder of ``out_dir`` (``""``: the main pipeline)
    folder: str = ""
    #: the stages of :data:`STAGES` this pipeline runs itself
    trains: frozenset[str] = frozenset(STAGES)
    #: datasets whose training and validation images it never sees (their test images are its unseen domains)
    held_out: tuple[str, ...] = ()
    #: the ablation it is (``None``: none); shown in messages
    variant: str | None = None
    #: MMDKD's specific teacher: the adapted teacher (``adapted``) or the plain LiteMedSAM encoder (``plain``)
    specific_teacher: Literal["adapted", "plain"] = "adapted"
    #: ESP-MedSAM option changes, and the parameter-name prefix of the part they remove (its lr factor goes too)
    model_changes: tuple[tuple[str, Any], ...] = ()
    removes: str | None = None
    #: added to the experiment's seed for the ESP-MedSAM training
    seed_offset: int = 0
    #: the ESP-MedSAM training starts from the MMDKD model with the trained head's decoder grafted in (``head``)
    decoder_from_head: bool = False
    #: score files: ``esp`` (as it predicts), ``esp_true_task``, ``esp_true_task_source`` (the held-out control),
    #: ``baselines`` (LiteMedSAM with GT and image-region boxes)
    scores: frozenset[str] = frozenset({"esp", "esp_true_task", "baselines"})

    @property
    def suffix(self) -> str:
        """Stage-record suffix: the held-out pipeline's stages also depend on ``unseen``."""
        return "-unseen" if self.held_out else ""


def pipelines(cfg: EspConfig) -> dict[str, Pipeline]:
    """name → :class:`Pipeline` of every pipeline ``cfg`` asks for: ``main``; ``unseen`` (all stages again without
    the ``unseen`` datasets); one ``ablation-<variant>`` per ablation (its own ESP-MedSAM, and its own MMDKD where
    the variant changes the distillation)."""
    table = {"main": Pipeline()}
    if cfg.unseen:
        table["unseen"] = Pipeline(folder="unseen", held_out=tuple(cfg.unseen),
                                   scores=frozenset({"esp", "esp_true_task", "esp_true_task_source", "baselines"}))
    for v in cfg.ablations:
        changes, gone = MODEL_VARIANTS.get(v, ({}, None))
        plain = v == "no_teacher_adaptation"
        table[f"ablation-{v}"] = Pipeline(
            folder=f"ablation-{v}", trains=frozenset({"esp", "classifier", *(["mmdkd"] if plain else [])}),
            variant=v, specific_teacher="plain" if plain else "adapted", model_changes=tuple(changes.items()),
            removes=gone, seed_offset=1 if v == "seed_replicate" else 0, decoder_from_head=v == "from_head",
            scores=frozenset({"esp"}))
    return table


def load_esp_config(path: str | Path, overrides: list[str] | None = None) -> EspConfig:
    """Read an experiment YAML (unknown keys and wrong types name the file and field); ``key.path=value``
    overrides as in ``medseg train``."""
    from medseg.training.config import load_config

    return load_config(path, overrides, schema=EspConfig)


class EspExperiment(StagedExperiment):
    """Runs the stages of one :class:`Pipeline` of an :class:`EspConfig`; each ``stage_*`` method is idempotent.

    Args:
        cfg: the experiment.
        progress: called with a one-line message when a stage starts.
        pipeline, main: a sub-pipeline of :func:`pipelines` and the main pipeline whose stages it reuses (set by
            the experiment itself; default: the main pipeline).
    """

    STAGE_INPUTS = STAGE_INPUTS
    cfg: EspConfig

    def __init__(self, cfg: EspConfig, progress: Callable[[str], None] = print, *,
                 pipeline: Pipeline | None = None, main: EspExperiment | None = None) -> None:
        self.pipeline = pipeline or Pipeline()
        if self.pipeline.folder and main is None:
            raise ValueError(f"the {self.pipeline.folder} pipeline needs the main pipeline")
        out = main.out / self.pipeline.folder if main is not None else cfg.out_dir
        super().__init__(cfg.model_copy(update={"out_dir": out}), progress)
        self.main = main
        if main is not None:
            self.cache = main.cache

    def _reused(self, stage: str) -> EspExperiment | None:
        """The main pipeline, where this pipeline reuses ``stage`` from it."""
        return self.main if self.main is not None and stage not in self.pipeline.trains else None

    def sub_pipelines(self) -> dict[str, EspExperiment]:
        """name → the experiment of every pipeline but the main one (:func:`pipelines`)."""
        return {name: EspExperiment(self.cfg, self.say, pipeline=p, main=self)
                for name, p in pipelines(self.cfg).items() if name != "main"}

    def task_of(self, e: CatalogEntry) -> str:
        return target_name(e.dataset, self.cfg.data.target_of)

    def stage_split(self) -> Path:
        """The main pipeline's split; without the held-out datasets' training and validation images (their test images
        stay: they are the unseen domains)."""
        if self.main is None:
            return super().stage_split()
        source = self.main.stage_split()
        if "split" not in self.pipeline.trains or not self.pipeline.held_out:
            return source
        from medseg.data import read_manifest, write_manifest

        path = self.out / "split.csv"
        self._claim(self.out / "split.settings.json", "split-unseen")
        if not path.is_file():
            keep = [e for e in read_manifest(source) if e.dataset not in self.pipeline.held_out or e.split == "test"]
            write_manifest(keep, path)
        return path

    def _pretrained(self) -> str | bool:
        return self.cfg.teacher_weights or True

    def _task_patch(self) -> dict[str, Any]:
        return {"data.heads": "per_target", "data.target_of": self.cfg.data.target_of, "data.box_prompt": "whole",
                "data.box_shift": 0, "loss.weights": self.cfg.loss, "trainer.monitor": "val/dice"}

    def _train(self, stage: str, out: Path, sc: StageConfig, name: str, options: dict[str, Any],
               init: Path | None, init_mode: str = "strict", seed: int | None = None) -> Path:
        from medseg.training import TrainConfig, train

        record = stage + ("-head" if self.pipeline.decoder_from_head else "") + self.pipeline.suffix
        return self._engine_stage(out, record, lambda resume: train(stage_config(TrainConfig, {
            **self.common_patch(sc, out, self.stage_split()), "model.name": name, "model.options": options,
            **self._task_patch(),
            **({"model.init": init, "model.init_mode": init_mode} if init is not None else {}),
            **({"seed": seed} if seed is not None else {})}), resume=resume))

    def stage_teacher(self) -> Path:
        if (main := self._reused("teacher")) is not None:
            return main.stage_teacher()
        out = self.out / "teacher"
        if not is_model_folder(out / "model"):
            self.say("teacher: LiteMedSAM's encoder frozen + a shared parameter bag, SPPG, QDMD")
        return self._train("teacher", out, self.cfg.teacher, "esp_medsam_teacher",
                           {"pretrained": self._pretrained(), **self.cfg.teacher_model}, None)

    def stage_mmdkd(self) -> Path:
        from medseg.distill import DistillConfig, distill

        if (main := self._reused("mmdkd")) is not None:
            return main.stage_mmdkd()
        out = self.out / "mmdkd"

        def run(resume: bool) -> Any:
            plain = {"pretrained": self._pretrained(), **self.cfg.lite_medsam}
            if self.pipeline.specific_teacher == "plain":  # the bags learn the plain encoder too
                self.say("mmdkd (no teacher adaptation): shared encoder and every bag ← LiteMedSAM")
                specific = {"specific_teacher.name": "lite_medsam", "specific_teacher.options": plain}
            else:
                teacher = self.stage_teacher()
                self.say("mmdkd: shared encoder ← LiteMedSAM, each task's bag ← the adapted teacher")
                adapted = read_model_meta(teacher)["options"]
                specific = {"specific_teacher.name": "esp_medsam_teacher", "specific_teacher.options": adapted,
                            "specific_teacher.init": teacher}
            cfg = stage_config(DistillConfig, {
                **self.common_patch(self.cfg.mmdkd, out, self.stage_split()), "model.name": "esp_medsam",
                "model.options": {"pretrained": self._pretrained(), **self.cfg.student}, "teacher.options": plain,
                **specific, "common_weight": self.cfg.common_weight, "specific_weight": self.cfg.specific_weight,
                "data.heads": "per_target", "data.target_of": self.cfg.data.target_of,
                "trainer.final_weights": "best"})
            return distill(cfg, resume=resume)

        return self._engine_stage(out, "mmdkd" + self.pipeline.suffix, run)

    def stage_esp(self) -> Path:
        out = self.out / "esp"
        p = self.pipeline
        what = f" ({p.variant})" if p.variant else (" without " + ", ".join(p.held_out) if p.held_out else "")
        if not is_model_folder(out / "model"):
            self.say(f"esp{what}: ESP-MedSAM trained from the MMDKD encoder")
        init = self.stage_mmdkd()
        changes, gone = dict(self.pipeline.model_changes), self.pipeline.removes
        sc = self.cfg.train
        if gone is not None:  # the part switched off has no parameters: its learning-rate factor would name nothing
            sc = sc.model_copy(update={"lr_multipliers": {k: v for k, v in sc.lr_multipliers.items()
                                                          if k != gone and not k.startswith(gone + ".")}})
        seed = self.cfg.seed + self.pipeline.seed_offset if self.pipeline.seed_offset else None
        options = {**self.cfg.student, **changes}
        if self.pipeline.decoder_from_head:  # the head's SPPG too (its dense prompt), as head_init was built
            init = self.stage_head_init()
            head_options = read_model_meta(init)["options"]
            options.update({k: head_options[k] for k in ("use_sppg", "dense_prompt") if k in head_options})
        return self._train("esp", out, sc, "esp_medsam", options, init,
                           "shared" if changes else "strict", seed)

    def stage_head_init(self) -> Path:
        """``head_init/model``: the MMDKD student (shared encoder and bags) with the trained head's decoder grafted in
        (:func:`medseg.models.prompt_free_head.graft_head`), where the ``from_head`` variant's training starts."""
        from medseg.models import build_model, load_state_matching
        from medseg.models.io import load_model, save_model_folder
        from medseg.models.prompt_free_head import graft_head, student_options

        out = self.out / "head_init"
        self._claim(out / "settings.json", "head_init")
        if is_model_folder(out / "model"):
            return out / "model"
        if self.cfg.head is None:
            raise MedsegError("the from_head variant needs `head:` (universal, a universal model folder or a "
                              "prompt_free_head model folder)")
        head = load_head(self.cfg.head)
        mmdkd = self.stage_mmdkd()
        student = load_model(mmdkd)
        # the student decodes as the head does (its SPPG's dense prompt), its encoder and bags are MMDKD's
        options = {**student.meta["options"], **student_options(head.model)}
        model = build_model(student.name, **options)
        load_state_matching(model, student.model.state_dict())
        left = graft_head(head.model, model)
        self.say(f"head_init: the MMDKD student with the decoder of {self.cfg.head} "
                 f"({len(head.model.state_dict()) - len(left)} tensors; not copied: {', '.join(left) or 'none'})")
        meta = {k: v for k, v in student.meta.items() if k not in ("name", "options", "img_size", "sha256", "versions")}
        return save_model_folder(model, out / "model", name=student.name, options=options,
                                 img_size=student.img_size,
                                 extra={**meta, "decoder_from": {
                                     "head": self.cfg.head, "sha256": head.meta["sha256"], "not_copied": left,
                                     "copied": sorted(set(head.model.state_dict()) - set(left))}})

    def stage_classifier(self) -> Path:
        """The model that is scored and shipped: ``esp/`` with its classifier's head refitted (``classifier/model``),
        or ``esp/model`` itself with ``classifier: null``."""
        esp = self.stage_esp()
        fit_cfg = self.cfg.classifier
        if fit_cfg is None:
            return esp
        out = self.out / "classifier"
        self._claim(out / "settings.json", "classifier" + self.pipeline.suffix)
        if is_model_folder(out / "model"):
            return out / "model"
        import torch

        from medseg.data import load_samples
        from medseg.evaluation import write_csv
        from medseg.models.io import load_model, save_model_folder
        from medseg.training.task_classifier import fit_task_classifier, pooled_features
        from medseg.utils.atomic import atomic_write_text

        self.say("classifier: the task classifier's head refitted on frozen features of the training split")
        loaded = load_model(esp)
        model = loaded.model
        tasks: list[str] = list(model.tasks)

        def split_features(split: str, flips: bool) -> tuple[torch.Tensor, torch.Tensor]:
            entries = [e for e in self.entries() if e.split == split and self.task_of(e) in tasks]
            images, labels = [], []
            for e in entries:
                for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, case_id=e.case_id):
                    images.append(loaded.input(s.image))
                    labels += [tasks.index(self.task_of(e))] * (3 if flips else 1)
            if not images:
                return torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64)
            feats = pooled_features(model, images, img_size=loaded.img_size, flips=flips,
                                    batch_size=fit_cfg.batch_size)
            return feats, torch.tensor(labels, dtype=torch.int64)

        x, y = split_features("train", fit_cfg.flips)
        vx, vy = split_features("val", False)
        fit = fit_task_classifier(model, x, y, vx if len(vy) else None, vy if len(vy) else None, fit_cfg)
        write_csv(fit.history, out / "history.csv")
        atomic_write_text(out / "fit.json", json.dumps({**fit.summary(), "train_images": len(x),
                                                        "val_images": len(vx)}, indent=1))
        meta = {k: v for k, v in loaded.meta.items() if k not in ("name", "options", "img_size", "sha256", "versions")}
        return save_model_folder(model, out / "model", name=loaded.name, options=loaded.meta["options"],
                                 img_size=loaded.img_size, extra={**meta, "classifier_fit": fit.summary()})

    # ---- scoring ----------------------------------------------------------------------------------------------
    def stage_scores(self) -> dict[str, list[dict[str, str]]]:
        from medseg.evaluation import score_entries
        from medseg.inference import Predictor
        from medseg.models import build_model
        from medseg.models.io import load_model

        scores = self.out / "scores"
        held = self.pipeline.held_out
        test = [e for e in self.entries() if e.split == "test" and (not held or e.dataset in held)]
        cols: Callable[[CatalogEntry], dict[str, str]] = lambda e: {"true_task": self.task_of(e)}  # noqa: E731
        loaded = load_model(self.stage_classifier())
        size = loaded.img_size
        out: dict[str, list[dict[str, str]]] = {}
        self._claim(scores / "esp.settings.json", "scores-esp" + self.pipeline.suffix)
        if not (scores / "esp.csv").is_file():
            self.say("scores: ESP-MedSAM on the test images (no prompt, no task given; then with the true task)")
        auto = Predictor.for_model(loaded)
        out["esp"] = score_entries(test, lambda e: auto, csv_path=scores / "esp.csv", columns=cols)
        if "esp_true_task" not in self.pipeline.scores:  # ablations: the model as it predicts, nothing else
            return out
        known = set(loaded.model.tasks)
        forced: dict[str, Predictor] = {}

        def with_true_task(e: CatalogEntry) -> Predictor:
            task = self.task_of(e)
            if task not in forced:
                forced[task] = Predictor.for_model(loaded, task=task)
            return forced[task]

        # an unseen dataset whose target no training dataset shares has no true task to force
        out["esp_true_task"] = score_entries([e for e in test if self.task_of(e) in known], with_true_task,
                                             csv_path=scores / "esp_true_task.csv", columns=cols)
        if "esp_true_task_source" in self.pipeline.scores:  # the control: the model on the datasets it trained on
            source = [e for e in self.entries() if e.split == "test" and e.dataset not in self.pipeline.held_out]
            out["esp_true_task_source"] = score_entries(source, with_true_task,
                                                        csv_path=scores / "esp_true_task_source.csv", columns=cols)
        if self.cfg.baseline and "baselines" in self.pipeline.scores:
            if not (scores / "lite_medsam_gt_box.csv").is_file():
                self.say("scores: LiteMedSAM with ground-truth boxes and with the image-region box")
            base = Predictor(build_model("lite_medsam", pretrained=self._pretrained(), img_size=size,
                                         **self.cfg.lite_medsam), img_size=size)
            out["lite_medsam_gt_box"] = score_entries(test, lambda e: base, csv_path=scores / "lite_medsam_gt_box.csv",
                                                      columns=cols, gt_boxes=True)
            out["lite_medsam_whole_box"] = score_entries(test, lambda e: base,
                                                         csv_path=scores / "lite_medsam_whole_box.csv", columns=cols)
        return out

    # ---- report -----------------------------------------------------------------------------------------------
    def stage_report(self) -> Path:
        scores = self.stage_scores()
        rep = self.out / "report"
        source = source_domain_table(scores)
        write_csv(source, rep / "source_domain.csv")
        acc = task_accuracy_table(scores["esp"], scores["esp_true_task"])
        write_csv(acc, rep / "task_accuracy.csv")
        sections = ["# ESP-MedSAM experiment report", "", f"Config: `{self.out / 'config.yaml'}`.", "",
                    "## Source domains (test split): mean per modality, prompt-free unless named", "",
                    format_markdown_table(source, digits=3), "",
                    "## Task classification (test split) and what a wrong task costs", "",
                    "`dice_chosen`: Dice with the task the classifier chose; `dice_true`: with the true task "
                    "(the same where the choice is right).", "", format_markdown_table(acc, digits=3), ""]
        fit_path = self.out / "classifier" / "fit.json"
        if self.cfg.classifier is not None and fit_path.is_file():
            fit = {k: ("n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else v)
                   for k, v in json.loads(fit_path.read_text()).items()}
            sections += [f"The classifier's head was refitted on frozen features of {fit['train_images']} training "
                         f"views (`classifier/`): validation accuracy {fit['val_accuracy_before']} as trained "
                         f"jointly, {fit['val_accuracy']} refitted (step {fit['chosen_step']} of "
                         f"{self.cfg.classifier.steps}, chosen on the validation split).", ""]
        subs = self.sub_pipelines()
        if "unseen" in subs:
            child_scores = subs["unseen"].stage_scores()
            unseen = unseen_domain_table(child_scores, scores["esp"])
            write_csv(unseen, rep / "unseen_domain.csv")
            control = dice_by_modality({"esp_true_task": [r for r in scores["esp_true_task"]
                                                          if r["dataset"] not in self.cfg.unseen],
                                        "esp_true_task_source": child_scores["esp_true_task_source"]})
            write_csv(control, rep / "unseen_control.csv")
            sections += [f"## Unseen domains: {', '.join(self.cfg.unseen)} kept out of every training stage", "",
                         "Per held-out dataset, on its test images: the pipeline trained without it (prompt-free "
                         "`esp`, the true task forced `esp_true_task`, LiteMedSAM with GT and image-region boxes), "
                         "and `*_esp_seen`: the full model, whose training split had the dataset's training images.",
                         "", format_markdown_table(unseen, digits=3), "",
                         "The control: Dice with the true task on the test images of the datasets both pipelines "
                         "trained on (`esp_true_task`: the full model; `esp_true_task_source`: the pipeline without "
                         "the held-out datasets). A gap here is the training's, not the domain's.", "",
                         format_markdown_table(control, digits=3), ""]
        if self.cfg.ablations:
            variants = {v: subs[f"ablation-{v}"].stage_scores()["esp"] for v in self.cfg.ablations}
            ablation = ablation_table(scores["esp"], variants, seed=self.cfg.seed)
            write_csv(ablation, rep / "ablation.csv")
            by_modality = dice_by_modality({"esp": scores["esp"], **variants})
            write_csv(by_modality, rep / "ablation_by_modality.csv")
            sections += ["## Ablation (test split, no prompt, no task given)", "",
                         "`dice_change`: the variant's mean Dice over modalities minus the full model's, on the same "
                         "images; `change_ci_*`: its 95 % paired bootstrap interval (images resampled within each "
                         "modality); `p_wilcoxon`: signed-rank test over the images.", "",
                         format_markdown_table(ablation, digits=3), "",
                         "Mean Dice per modality (`dice_esp`: the full model; `dice_<variant>`):", "",
                         format_markdown_table(by_modality, digits=3), ""]
        return self.write_report(rep / "report.md", sections)

    def run(self) -> Path:
        """Every stage in order (each skipped when done); returns the report."""
        self.begin()
        self._timed("split", self.stage_split)
        self._timed("teacher", self.stage_teacher)
        self._timed("mmdkd", self.stage_mmdkd)
        self._timed("esp", self.stage_esp)
        self._timed("classifier", self.stage_classifier)
        self._timed("scores", self.stage_scores)
        for name, sub in self.sub_pipelines().items():  # unseen domains, then the ablations
            self._timed(name, sub.stage_scores)
        return self._timed("report", self.stage_report)


def load_head(spec: str) -> Any:
    """The trained prompt-free head that ``spec`` names (see :attr:`EspConfig.head`), loaded and hash-checked (a
    ``universal`` folder's head also against the sha256 its ``model.json`` pins).

    Raises:
        MedsegError / InvalidInputError: not a head, or not the pinned one (naming the folder).
    """
    from medseg.models.io import META_FILE, load_model
    from medseg.weights import shipped_model_folder

    folder = shipped_model_folder("universal") if spec == "universal" else Path(spec)
    pinned = None
    if (folder / "head" / META_FILE).is_file() and (folder / META_FILE).is_file():
        pinned = json.loads((folder / META_FILE).read_text()).get("parts", {}).get("head")
        folder = folder / "head"
    loaded = load_model(folder)
    if loaded.name != "prompt_free_head":
        raise MedsegError(f"{folder}: a {loaded.name} model, not a prompt_free_head (head: {spec})")
    if pinned is not None and loaded.meta.get("sha256") != pinned:
        raise MedsegError(f"{folder}: its weights ({loaded.meta.get('sha256')}) are not the ones "
                          f"{folder.parent / META_FILE} pins")
    return loaded


def source_domain_table(scores: dict[str, list[dict[str, str]]], by: str = "modality") -> list[dict[str, Any]]:
    """Per ``by`` group (modality or dataset) and over groups: mean Dice, NSD and median HD95 of each method."""
    order = ("esp", "esp_true_task", "lite_medsam_gt_box", "lite_medsam_whole_box")
    methods = [m for m in order if m in scores] + [m for m in scores if m not in order]
    groups = sorted({r[by] for r in scores[methods[0]]})
    aggregates = (("dice", np.mean), ("nsd", np.mean), ("hd95", np.median))
    per = {(m, metric): group_means(scores[m], by, metric, agg=agg) for m in methods for metric, agg in aggregates}
    out = []
    mean = "mean over " + {"modality": "modalities", "dataset": "datasets"}.get(by, by)
    for g in [*groups, mean]:
        row: dict[str, Any] = {by: g}
        for m in methods:
            for metric, _ in aggregates:
                values = per[(m, metric)]
                if g == mean:
                    of_groups = [values.get(k, float("nan")) for k in groups]
                    row[f"{metric}_{m}"] = (float(np.nanmean(of_groups)) if metric != "hd95"
                                            else float(np.nanmedian(of_groups)))
                else:
                    row[f"{metric}_{m}"] = values.get(g, float("nan"))
        out.append(row)
    return out


def dice_by_modality(scores: dict[str, list[dict[str, str]]]) -> list[dict[str, Any]]:
    """The Dice columns of :func:`source_domain_table`: per modality and over modalities, ``dice_<method>``."""
    return [{k: v for k, v in r.items() if k == "modality" or k.startswith("dice")}
            for r in source_domain_table(scores)]


def unseen_domain_table(unseen: dict[str, list[dict[str, str]]], seen_esp: list[dict[str, str]]
                        ) -> list[dict[str, Any]]:
    """:func:`source_domain_table` by dataset of the pipeline that never saw the held-out datasets, with the full
    model's prompt-free scores on the same test images beside it (``dice_esp_seen``, ``nsd_esp_seen``,
    ``hd95_esp_seen``): what leaving a domain out of training costs."""
    table = source_domain_table({k: v for k, v in unseen.items() if k != "esp_true_task_source"}, by="dataset")
    held = {r["dataset"] for r in unseen["esp"]}
    seen = source_domain_table({"esp": [r for r in seen_esp if r["dataset"] in held]}, by="dataset")
    by = {r["dataset"]: r for r in seen}  # the held-out datasets and "mean over datasets", as in ``table``
    for row in table:
        for metric in ("dice", "nsd", "hd95"):
            row[f"{metric}_esp_seen"] = by.get(row["dataset"], {}).get(f"{metric}_esp", float("nan"))
    return table


def ablation_table(full: list[dict[str, str]], variants: dict[str, list[dict[str, str]]], *, n_boot: int = 10_000,
                   seed: int = 0) -> list[dict[str, Any]]:
    """The full model and each variant: mean over modalities of the mean Dice and of the median HD95, task
    accuracy, and the Dice change against the full model on the same test images — with its 95 % paired bootstrap
    interval (images resampled within each modality, :func:`medseg.stats.stratified_bootstrap_ci`) and the
    Wilcoxon signed-rank p over the images (:func:`medseg.stats.paired_test`)."""
    from medseg.stats import paired_test, stratified_bootstrap_ci

    def summary(rows: list[dict[str, str]]) -> tuple[float, float, float]:
        dice = float(np.mean(list(group_means(rows, "modality").values())))
        hd = float(np.nanmean(list(group_means(rows, "modality", "hd95", agg=np.median).values())))
        return dice, hd, float(np.mean([r["task"] == r["true_task"] for r in rows]))

    def dice_of(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], float]:
        return {(r["modality"], r["dataset"], r["case"]): float(r["dice"]) for r in rows
                if r.get("dice", "") not in ("", "nan")}

    base, base_dice = summary(full), dice_of(full)
    nan = float("nan")
    out = [{"variant": "full ESP-MedSAM", "dice": base[0], "hd95": base[1], "task_accuracy": base[2],
            "dice_change": 0.0, "change_ci_low": nan, "change_ci_high": nan, "p_wilcoxon": nan}]
    for name, rows in variants.items():
        d, h, a = summary(rows)
        pairs = [(k, v, base_dice[k]) for k, v in dice_of(rows).items() if k in base_dice]
        groups = [[v - b for k, v, b in pairs if k[0] == m] for m in sorted({k[0] for k, _, _ in pairs})]
        lo, hi = stratified_bootstrap_ci(groups, n_boot=n_boot, seed=seed) if groups else (nan, nan)
        p = paired_test([v for _, v, _ in pairs], [b for _, _, b in pairs]).p_wilcoxon if len(pairs) > 1 else nan
        out.append({"variant": name, "dice": d, "hd95": h, "task_accuracy": a, "dice_change": d - base[0],
                    "change_ci_low": lo, "change_ci_high": hi, "p_wilcoxon": p})
    return out


def task_accuracy_table(chosen: list[dict[str, str]], true: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per dataset: images, share classified as their true task, and mean Dice with the chosen vs the true task
    over all images and over the misclassified ones."""
    key = ("modality", "dataset", "case")
    by_true = {tuple(r[k] for k in key): r for r in true}
    out = []
    for ds in sorted({(r["modality"], r["dataset"]) for r in chosen}):
        rows = [r for r in chosen if (r["modality"], r["dataset"]) == ds]
        wrong = [r for r in rows if r["task"] != r["true_task"]]
        pair = [(float(r["dice"]), float(by_true[tuple(r[k] for k in key)]["dice"])) for r in rows]
        bad = [(float(r["dice"]), float(by_true[tuple(r[k] for k in key)]["dice"])) for r in wrong]
        out.append({"modality": ds[0], "dataset": ds[1], "n": len(rows), "accuracy": 1 - len(wrong) / len(rows),
                    "chosen_as": ", ".join(sorted({r["task"] for r in wrong})),
                    "dice_chosen": float(np.mean([a for a, _ in pair])),
                    "dice_true": float(np.mean([b for _, b in pair])),
                    "dice_chosen_when_wrong": float(np.mean([a for a, _ in bad])) if bad else float("nan"),
                    "dice_true_when_wrong": float(np.mean([b for _, b in bad])) if bad else float("nan")})
    n = sum(r["n"] for r in out)
    if n:
        out.append({"modality": "all", "dataset": "all", "n": n,
                    "accuracy": sum(r["accuracy"] * r["n"] for r in out) / n, "chosen_as": "",
                    "dice_chosen": float(np.mean([float(r["dice"]) for r in chosen])),
                    "dice_true": float(np.mean([float(r["dice"]) for r in true])),
                    "dice_chosen_when_wrong": float("nan"), "dice_true_when_wrong": float("nan")})
    return out
