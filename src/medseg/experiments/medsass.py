"""MedSASS end to end (``medseg experiment medsass CONFIG``): split → Otsu pseudo-masks → pre-train each start (MedSASS
end-to-end on the pseudo-masks; SimSiam, BYOL, DINO encoder-only) per architecture → fine-tune every start with 1 %,
10 % and 100 % of the labelled training split, several seeds → score the test images → report.

Every stage writes into ``out_dir/<stage>/`` and is skipped when its output exists; a killed training resumes from
its ``last.ckpt``; each stage records the config sections it was built from (``settings.json``). Stages:

===================================  =================================================================================
``split.csv``                        as CMMC's (:class:`medseg.experiments.base.StagedExperiment`)
``pseudo/``                          the Otsu pseudo-mask of every training and validation image
                                     (:mod:`medseg.ssl.pseudo_masks`; ground truth never read), ``manifest.csv``
                                     pointing at them, and ``quality.csv``: IoU / Dice of each polarity rule against
                                     the ground truth of the training images (how good a teacher Otsu is)
``pretrain/<arch>/medsass/``         the whole U-Net (encoder + decoder) trained on the pseudo-masks with
                                     ``medsass_loss`` (focal-Tversky), validated on the validation images' pseudo-masks
``pretrain/<arch>/<ssl>/``           SimSiam / BYOL / DINO on the training images (:mod:`medseg.ssl`), encoder only
``finetune/<arch>/<start>/f<fraction>-s<seed>/``  fine-tuning on :func:`medseg.data.labelled_subset` (stratified,
                                     nested, ≥ 1 image per dataset) for a number of steps set by the subset's size
                                     (:meth:`MedsassExperiment.finetune_steps`; no validation: with 1 % of the
                                     labels there is nothing to select on), from
                                     ``scratch``, ``medsass`` (all weights), ``medsass_encoder`` (MedSASS's encoder,
                                     decoder discarded) or an SSL encoder
``scores/<arch>/<start>/f<fraction>-s<seed>.csv``  per-image IoU, Dice (and NSD, HD95) at native resolution on the
                                     test split
``report/``                          method × label fraction × modality (mean ± std over seeds), the targets, paired
                                     tests against scratch and against encoder-only (:mod:`medseg.stats`), pseudo-mask
                                     quality, learning curves, overlays; ``report.md``
===================================  =================================================================================

What the paper leaves open and medseg fixes (options in :class:`MedsassConfig`): BT.601 grey, Otsu on the 256-bin
histogram, ``auto`` polarity (the class touching the border less is foreground), no clean-up; focal-Tversky with
FN weight 0.7, FP weight 0.3, exponent 0.75 (Abraham & Khan); RGB input (``data.color: grey``: every model trains
and predicts on the BT.601 grey image); the fine-tuning loss is the pre-training one; the fine-tuning length
grows with the labelled subset (``finetune_epochs``, bounded by ``finetune.steps`` and ``finetune_max_steps``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medseg.data import CatalogEntry, Sample, labelled_subset, load_samples, read_manifest, write_manifest
from medseg.evaluation import format_markdown_table, write_csv
from medseg.experiments.base import (
    ExperimentData,
    ExperimentSplit,
    StageConfig,
    StagedExperiment,
    Strict,
    TrainerOptions,
)
from medseg.models.io import is_model_folder
from medseg.training.config import LossConfig, ModelSpec, stage_config

Start = Literal["scratch", "medsass", "medsass_encoder", "simsiam", "byol", "dino"]
SSL_METHODS = ("simsiam", "byol", "dino")
FOCAL_TVERSKY = {"focal_tversky": {"fn_weight": 0.7, "fp_weight": 0.3, "exponent": 0.75}}


class PseudoSpec(Strict):
    """The pseudo-mask rule (:func:`medseg.ops.otsu_pseudo_mask`) and the rules the quality table compares."""

    polarity: Literal["bright", "dark", "auto"] = "auto"
    min_size: int = Field(0, ge=0)
    fill_holes: bool = False
    opening_radius: int = Field(0, ge=0)
    compare: list[Literal["bright", "dark", "auto"]] = Field(default_factory=lambda: ["bright", "dark", "auto"])


def _focal_tversky() -> LossConfig:
    """The MedSASS loss (``medseg train``'s :class:`LossConfig`): focal Tversky with the paper's settings."""
    return LossConfig(weights={"focal_tversky": 1.0}, options=dict(FOCAL_TVERSKY))


def _default_archs() -> dict[str, ModelSpec]:
    return {"cnn": ModelSpec(name="resnet_unet", options={"arch": "resnet50", "encoder_depth": 3,
                                                           "decoder_channels": [256, 128, 64]}),
            "vit": ModelSpec(name="vit_unet")}


class MedsassConfig(Strict):
    """The whole experiment (see the module docstring); paths relative to the working directory."""

    out_dir: Path = Path("runs/medsass")
    seed: int = 2024
    data: ExperimentData = Field(default_factory=lambda: ExperimentData(img_size=224))
    split: ExperimentSplit = Field(default_factory=ExperimentSplit)
    archs: dict[str, ModelSpec] = Field(default_factory=_default_archs)
    starts: list[Start] = Field(default_factory=lambda: ["scratch", "medsass", "medsass_encoder", "simsiam",
                                                         "byol", "dino"])
    pseudo: PseudoSpec = Field(default_factory=PseudoSpec)
    pretrain: StageConfig = Field(default_factory=lambda: StageConfig(steps=2000, batch_size=16, lr=3.6e-4,
                                                                      weight_decay=1e-5))
    medsass_loss: LossConfig = Field(default_factory=_focal_tversky)
    #: per SSL method, its options (:mod:`medseg.ssl.methods`: head widths, temperatures, local crops)
    ssl: dict[str, dict[str, Any]] = Field(default_factory=dict)
    #: SSL pre-training's own stage settings (default: ``pretrain``'s)
    ssl_pretrain: StageConfig | None = None
    finetune: StageConfig = Field(default_factory=lambda: StageConfig(steps=500, batch_size=16, lr=3.6e-4,
                                                                      weight_decay=1e-5))
    #: fine-tuning length grows with the labelled subset: ⌈finetune_epochs · images / batch⌉ steps, at least
    #: ``finetune.steps`` and at most ``finetune_max_steps`` (``null``: ``finetune.steps`` for every subset)
    finetune_epochs: float | None = Field(None, gt=0)
    finetune_max_steps: int | None = Field(None, ge=1)
    finetune_loss: LossConfig = Field(default_factory=_focal_tversky)
    fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    surface_metrics: bool = True  # NSD (τ = 2 px) and HD95 besides IoU and Dice
    overlays_per_modality: int = Field(2, ge=0)
    trainer: TrainerOptions = Field(default_factory=TrainerOptions)


STAGE_INPUTS: dict[str, tuple[str, ...]] = dict(StagedExperiment.STAGE_INPUTS)
STAGE_INPUTS["pseudo"] = (*STAGE_INPUTS["split"], "pseudo")
STAGE_INPUTS["pretrain-medsass"] = (*STAGE_INPUTS["pseudo"], "archs", "pretrain", "medsass_loss")
STAGE_INPUTS["pretrain-ssl"] = (*STAGE_INPUTS["split"], "archs", "pretrain", "ssl_pretrain", "ssl")
STAGE_INPUTS["finetune"] = (*STAGE_INPUTS["pretrain-medsass"], "ssl_pretrain", "ssl", "finetune", "finetune_epochs",
                             "finetune_max_steps", "finetune_loss")


def load_medsass_config(path: str | Path, overrides: list[str] | None = None) -> MedsassConfig:
    """Read an experiment YAML (unknown keys and wrong types name the file and field); ``key.path=value``
    overrides as in ``medseg train``."""
    from medseg.training.config import load_config

    return load_config(path, overrides, schema=MedsassConfig)


def run_name(fraction: float, seed: int) -> str:
    """``f0.01-s0``: the folder / file name of one fine-tuning run."""
    return f"f{fraction:g}-s{seed}"


class MedsassExperiment(StagedExperiment):
    """Runs the stages of one :class:`MedsassConfig`; each ``stage_*`` method is idempotent."""

    STAGE_INPUTS = STAGE_INPUTS
    cfg: MedsassConfig

    def __init__(self, cfg: MedsassConfig, progress: Callable[[str], None] = print) -> None:
        super().__init__(cfg, progress)
        self._samples: dict[Path, list[Sample]] = {}

    # ---- pseudo-masks -----------------------------------------------------------------------------------------
    def _cleanup(self) -> Any:
        from medseg.ops import Cleanup

        p = self.cfg.pseudo
        if not (p.min_size or p.fill_holes or p.opening_radius):
            return None
        return Cleanup(min_size=p.min_size, fill_holes=p.fill_holes, opening_radius=p.opening_radius)

    def stage_pseudo(self) -> Path:
        """``pseudo/manifest.csv`` (training and validation images with their pseudo-masks) and ``quality.csv``."""
        from medseg.ssl.pseudo_masks import pseudo_mask_quality, write_pseudo_masks

        out = self.out / "pseudo"
        self._claim(out / "settings.json", "pseudo")
        manifest = out / "manifest.csv"
        if not manifest.is_file():
            pool = [e for e in self.entries() if e.split in ("train", "val")]
            self.say(f"pseudo: Otsu pseudo-masks of {len(pool)} training and validation images")
            write_manifest(write_pseudo_masks(pool, out / "masks", polarity=self.cfg.pseudo.polarity,
                                              cleanup=self._cleanup()), manifest)
        if not (out / "quality.csv").is_file():
            train = [e for e in self.entries() if e.split == "train"]
            self.say(f"pseudo: quality of {', '.join(self.cfg.pseudo.compare)} pseudo-masks against the ground "
                     f"truth of {len(train)} training images")
            write_csv(pseudo_mask_quality(train, self.cfg.pseudo.compare, cleanup=self._cleanup()),
                      out / "quality.csv")
        return manifest

    # ---- pre-training -----------------------------------------------------------------------------------------
    def _model_patch(self, arch: str) -> dict[str, Any]:
        spec = self.cfg.archs[arch]
        return {"model.name": spec.name, "model.options": spec.options}

    def stage_pretrain(self, arch: str, method: str) -> Path:
        """``pretrain/<arch>/<method>/model``: MedSASS (``medsass``) or an SSL method's pre-trained model."""
        out = self.out / "pretrain" / arch / method
        if method == "medsass":
            return self._seg_train(out, "pretrain-medsass", self.cfg.pretrain, self.stage_pseudo(), arch,
                                   self.cfg.medsass_loss, init=None,
                                   what=f"pretrain {arch}/medsass: encoder + decoder on the Otsu pseudo-masks")
        from medseg.ssl.pretrain import SslConfig, pretrain

        def run(resume: bool) -> Any:
            self.say(f"pretrain {arch}/{method}: encoder only, on the training images")
            stage = self.cfg.ssl_pretrain or self.cfg.pretrain
            cfg = stage_config(SslConfig, {**self.common_patch(stage, out, self.stage_split()),
                                           **self._model_patch(arch), "method": method,
                                           "method_options": self.cfg.ssl.get(method, {})})
            return pretrain(cfg, resume=resume)

        return self._engine_stage(out, "pretrain-ssl", run)

    def _seg_train(self, out: Path, stage: str, sc: StageConfig, manifest: Path, arch: str, loss: LossConfig,
                   init: tuple[Path, str] | None, what: str, extra: dict[str, Any] | None = None) -> Path:
        from medseg.training import TrainConfig, train

        def run(resume: bool) -> Any:
            self.say(what)
            cfg = stage_config(TrainConfig, {**self.common_patch(sc, out, manifest), **self._model_patch(arch),
                                             "loss.weights": loss.weights, "loss.options": loss.options,
                                             **({"model.init": init[0], "model.init_mode": init[1]} if init else {}),
                                             **(extra or {})})
            return train(cfg, resume=resume)

        return self._engine_stage(out, stage, run)

    # ---- fine-tuning ------------------------------------------------------------------------------------------
    def init_of(self, arch: str, start: str) -> tuple[Path, str] | None:
        """The weights a fine-tuning run starts from: ``None`` (scratch), MedSASS's whole model, or an encoder."""
        if start == "scratch":
            return None
        if start == "medsass":
            return self.stage_pretrain(arch, "medsass"), "strict"
        source = "medsass" if start == "medsass_encoder" else start
        return self.stage_pretrain(arch, source), "encoder"

    def finetune_steps(self, images: int) -> int:
        """Optimiser steps of a fine-tuning run on ``images`` labelled images (see ``finetune_epochs``)."""
        c = self.cfg
        if c.finetune_epochs is None:
            return c.finetune.steps
        steps = max(c.finetune.steps, math.ceil(c.finetune_epochs * images / c.finetune.batch_size))
        return steps if c.finetune_max_steps is None else min(steps, max(c.finetune_max_steps, c.finetune.steps))

    def stage_finetune(self, arch: str, start: str, fraction: float, seed: int) -> Path:
        out = self.out / "finetune" / arch / start / run_name(fraction, seed)
        manifest = out / "manifest.csv"
        if not manifest.is_file() and not is_model_folder(out / "model"):
            train = [e for e in self.entries() if e.split == "train"]
            write_manifest(labelled_subset(train, fraction, seed), manifest)
        init = self.init_of(arch, start)
        n = len(read_manifest(manifest))
        steps = self.finetune_steps(n)
        stage = self.cfg.finetune.model_copy(update={"steps": steps})
        return self._seg_train(out, "finetune", stage, manifest, arch, self.cfg.finetune_loss, init,
                               what=f"finetune {arch}/{start} with {fraction:.0%} of the labels ({n} images, "
                                    f"{steps} steps), seed {seed}",
                               extra={"seed": seed, "trainer.final_weights": "last"})

    def runs(self) -> list[tuple[str, str, float, int]]:
        """Every (arch, start, fraction, seed) of the config, in run order."""
        return [(a, s, f, seed) for a in self.cfg.archs for s in self.cfg.starts for f in self.cfg.fractions
                for seed in self.cfg.seeds]

    # ---- scoring ----------------------------------------------------------------------------------------------
    def _load(self, e: CatalogEntry) -> list[Sample]:
        """The samples of a test entry, read once per experiment (every fine-tuned model scores the same images)."""
        if e.image not in self._samples:
            self._samples[e.image] = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset,
                                                  mask_mode="nonzero")
        return self._samples[e.image]

    def stage_score(self, arch: str, start: str, fraction: float, seed: int) -> list[dict[str, str]]:
        from medseg.evaluation import score_entries
        from medseg.inference import Predictor
        from medseg.metrics.segmentation import MetricConfig
        from medseg.models.io import load_model

        path = self.out / "scores" / arch / start / f"{run_name(fraction, seed)}.csv"
        test = [e for e in self.entries() if e.split == "test"]
        built: list[Predictor] = []

        def predictor(e: CatalogEntry) -> Predictor:  # built on first use: a cached CSV needs no model
            if not built:
                loaded = load_model(self.stage_finetune(arch, start, fraction, seed))
                built.append(Predictor.for_model(loaded))
            return built[0]

        return score_entries(test, predictor, csv_path=path, load=self._load,
                             config=MetricConfig(tolerance=2.0, surface=self.cfg.surface_metrics),
                             columns=lambda e: {"arch": arch, "start": start, "fraction": f"{fraction:g}",
                                                "seed": str(seed)})

    # ---- report -----------------------------------------------------------------------------------------------
    def stage_report(self) -> Path:
        from medseg.experiments.medsass_report import (
            learning_curves,
            paired_table,
            quality_summary,
            results_table,
            save_overlays,
            targets_table,
        )

        rows = [r for run in self.runs() for r in self.stage_score(*run)]
        rep = self.out / "report"
        results = results_table(rows)
        write_csv(results, rep / "results.csv")
        write_csv(rows, rep / "per_image.csv")
        paired = paired_table(rows)
        write_csv(paired, rep / "paired_tests.csv")
        targets = targets_table(results)
        write_csv(targets, rep / "targets.csv")
        budget = self.budget_table()
        write_csv(budget, rep / "finetune_budget.csv")
        quality = quality_summary(self.out / "pseudo" / "quality.csv")
        write_csv(quality, rep / "pseudo_quality.csv")
        figures = [learning_curves(results, rep / "learning_curves.png")]
        first = self.runs()[0]
        show = next((r for r in self.runs() if r[1] == "medsass" and r[3] == self.cfg.seeds[0]), first)
        test = [e for e in self.entries() if e.split == "test"]
        figures.append(save_overlays(test, self.stage_finetune(*show), self.cfg.pseudo.polarity, self._cleanup(),
                                     rep / "overlays.png", per_modality=self.cfg.overlays_per_modality,
                                     caption=f"{show[0]}/{show[1]} {run_name(show[2], show[3])}"))
        sections = ["# MedSASS experiment report", "", f"Config: `{self.out / 'config.yaml'}`.", "",
                    "## Targets (test split; mean over modalities of the per-seed mean Dice)", "",
                    format_markdown_table(targets, digits=3), "",
                    "## Dice and IoU per start, label fraction and modality (test split, mean ± std over seeds)", "",
                    format_markdown_table(_display(results), digits=3), "",
                    "## Fine-tuning length per label fraction (labelled images of the subsets; optimiser steps of "
                    f"batch {self.cfg.finetune.batch_size})", "", format_markdown_table(budget, digits=3), "",
                    "## Paired tests per image (Dice averaged over seeds)", "",
                    format_markdown_table(paired, digits=4), "",
                    "## How good a teacher Otsu is: pseudo-mask vs ground truth on the training images", "",
                    format_markdown_table(quality, digits=3), "",
                    "## Figures", "", *[f"![{p.stem}]({p.name})" for p in figures if p is not None], ""]
        return self.write_report(rep / "report.md", sections)

    def budget_table(self) -> list[dict[str, Any]]:
        """Per label fraction: the subsets' sizes over seeds and the fine-tuning steps they got."""
        out = []
        for fraction in self.cfg.fractions:
            runs = [self.out / "finetune" / a / s / run_name(f, seed) for a, s, f, seed in self.runs() if f == fraction]
            sizes = sorted({len(read_manifest(r / "manifest.csv")) for r in runs})
            steps = sorted({self.finetune_steps(n) for n in sizes})
            out.append({"fraction": f"{fraction:g}", "images": "–".join(map(str, sorted({sizes[0], sizes[-1]}))),
                        "steps": "–".join(map(str, sorted({steps[0], steps[-1]}))),
                        "epochs": round(steps[0] * self.cfg.finetune.batch_size / sizes[0], 1)})
        return out

    def run(self) -> Path:
        """Every stage in order (each skipped when done); returns the report."""
        self.begin()
        self._timed("split", self.stage_split)
        self._timed("pseudo", self.stage_pseudo)
        for arch in self.cfg.archs:
            for method in ("medsass", *SSL_METHODS):
                if method in self.cfg.starts or (method == "medsass" and "medsass_encoder" in self.cfg.starts):
                    self._timed(f"pretrain-{arch}-{method}", lambda a=arch, m=method: self.stage_pretrain(a, m))
        for run in self.runs():
            self._timed(f"finetune-{run[0]}", lambda r=run: self.stage_finetune(*r))
        for run in self.runs():
            self._timed("scores", lambda r=run: self.stage_score(*r))
        return self._timed("report", self.stage_report)


def _display(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """results rows → one row per (arch, modality, fraction) with a "mean ± std" Dice cell per start."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in results:
        key = (r["arch"], r["modality"], r["fraction"])
        row = out.setdefault(key, {"arch": key[0], "modality": key[1], "labels": key[2]})
        row[r["start"]] = f"{r['dice_mean']:.3f} ± {r['dice_std']:.3f}"
    return list(out.values())


__all__ = ["MedsassConfig", "MedsassExperiment", "load_medsass_config", "run_name"]
