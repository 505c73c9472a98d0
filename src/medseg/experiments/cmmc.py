"""CMMC end to end (``medseg experiment cmmc CONFIG``): split → distil the encoder → pre-train on raw and on
edge-enhanced images → fine-tune each per subset on raw images, prompt-free → score the test images → statistics,
routers, report.

Every stage writes into ``out_dir/<stage>/`` and is skipped when its output exists; a training stage that was
killed resumes from its ``last.ckpt`` (the engine's exact resume). Stages:

=====================  ===============================================================================================
``split.csv``          seeded, group-aware split of ``data.root`` (``split.test`` / ``split.val``), optionally
                       capped per dataset (``data.max_per_dataset``, the CPU scale)
``distill/``           student encoder ← LiteMedSAM encoder (MSE on cached embeddings; :mod:`medseg.distill`)
``pretrain-raw/``      student, all modalities, raw images, GT boxes with jitter, BCE + Dice + IoU-MSE (unweighted)
``pretrain-edge/``     the same on edge-enhanced images (``edge``: Kirsch by default)
``finetune/{raw,edge}/<subset>/``  each pre-trained model fine-tuned on one subset's **raw** images with the
                       whole-image box (prompt-free)
``scores/``            per-image Dice / NSD (τ = 2 px) at native resolution of every fine-tuned model and of
                       prompt-free LiteMedSAM on the test images, and the images' meta-features
``report/``            significance, Table 1, Table 2 per router (CSV + Markdown), routers as JSON, plots, report.md
=====================  ===============================================================================================

Subsets: the paper fine-tunes per modality, where each modality had one target; here a modality may hold several
targets (fundus: vessels and optic disc), so the subset is the (modality, target) pair — a dataset, unless
``data.target_of`` merges datasets with one target. Tables are per modality as in the paper.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medseg.data import CatalogEntry, load_samples, target_name, write_manifest
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
from medseg.models.io import is_model_folder
from medseg.training.config import stage_config
from medseg.utils.atomic import atomic_write_text


class CmmcRouting(Strict):
    features: list[str] = Field(default_factory=lambda: ["std", "entropy"])
    routers: list[Literal["threshold", "logistic", "tree"]] = Field(
        default_factory=lambda: ["threshold", "logistic", "tree"])
    folds: int = Field(5, ge=2)
    n_boot: int = Field(10_000, ge=100)


class CmmcConfig(Strict):
    """The whole experiment (see the module docstring); paths relative to the working directory."""

    out_dir: Path = Path("runs/cmmc")
    seed: int = 2024
    data: ExperimentData = Field(default_factory=ExperimentData)
    split: ExperimentSplit = Field(default_factory=ExperimentSplit)
    edge: Literal["kirsch", "sobel", "prewitt", "scharr", "laplacian"] = "kirsch"
    teacher_weights: str | None = None  # LiteMedSAM checkpoint path (default: the registered weights)
    distill: StageConfig = Field(default_factory=lambda: StageConfig(steps=300))
    pretrain: StageConfig = Field(default_factory=lambda: StageConfig(steps=300))
    finetune: StageConfig = Field(default_factory=lambda: StageConfig(steps=60))
    box_shift: int = 5
    student: dict[str, Any] = Field(default_factory=dict)  # lite_medsam_student options (test scale: smaller)
    teacher: dict[str, Any] = Field(default_factory=dict)  # lite_medsam options (test scale: smaller)
    trainer: TrainerOptions = Field(default_factory=TrainerOptions)
    routing: CmmcRouting = Field(default_factory=CmmcRouting)
    baseline: bool = True  # also score prompt-free LiteMedSAM on the test images


#: the config sections each stage's output depends on (``trainer``, ``routing``, ``baseline`` shape no stage)
STAGE_INPUTS: dict[str, tuple[str, ...]] = dict(StagedExperiment.STAGE_INPUTS)
STAGE_INPUTS["distill"] = (*STAGE_INPUTS["split"], "teacher_weights", "teacher", "student", "distill")
STAGE_INPUTS["pretrain-raw"] = (*STAGE_INPUTS["distill"], "pretrain", "box_shift")
STAGE_INPUTS["pretrain-edge"] = (*STAGE_INPUTS["pretrain-raw"], "edge")
STAGE_INPUTS["finetune-raw"] = (*STAGE_INPUTS["pretrain-raw"], "finetune")
STAGE_INPUTS["finetune-edge"] = (*STAGE_INPUTS["pretrain-edge"], "finetune")


def load_cmmc_config(path: str | Path, overrides: list[str] | None = None) -> CmmcConfig:
    """Read an experiment YAML (unknown keys and wrong types name the file and field); ``key.path=value``
    overrides as in ``medseg train``."""
    from medseg.training.config import load_config

    return load_config(path, overrides, schema=CmmcConfig)


def subset_of(e: CatalogEntry, target_of: dict[str, str]) -> str:
    """The fine-tuning subset of an entry: ``<modality>-<target>``."""
    return f"{e.modality}-{target_name(e.dataset, target_of)}"


class CmmcExperiment(StagedExperiment):
    """Runs the stages of one :class:`CmmcConfig`; each ``stage_*`` method is idempotent.

    Args:
        cfg: the experiment.
        progress: called with a one-line message when a stage starts.
    """

    STAGE_INPUTS = STAGE_INPUTS
    cfg: CmmcConfig

    def subsets(self) -> list[str]:
        return sorted({subset_of(e, self.cfg.data.target_of) for e in self.entries()})

    # ---- training stages --------------------------------------------------------------------------------------
    def _student_options(self, pretrained: bool) -> dict[str, Any]:
        opts = dict(self.cfg.student)
        if pretrained:
            opts["pretrained"] = self.cfg.teacher_weights or True
        return opts

    def stage_distill(self) -> Path:
        from medseg.distill import DistillConfig, distill

        out = self.out / "distill"

        def run(resume: bool) -> Any:
            self.say("distill: student encoder ← LiteMedSAM encoder")
            teacher = {"pretrained": self.cfg.teacher_weights or True, **self.cfg.teacher}
            cfg = stage_config(DistillConfig, {
                **self.common_patch(self.cfg.distill, out, self.stage_split()),
                "model.options": self._student_options(True), "teacher.options": teacher,
                "trainer.final_weights": "best"})
            return distill(cfg, resume=resume)

        return self._engine_stage(out, "distill", run)

    def _train(self, out: Path, stage: StageConfig, manifest: Path, init: Path, extra: dict[str, Any],
               name: str) -> Path:
        from medseg.training import TrainConfig, train

        return self._engine_stage(out, name, lambda resume: train(stage_config(TrainConfig, {
            **self.common_patch(stage, out, manifest), "model.name": "lite_medsam_student",
            "model.options": self._student_options(False), "model.init": init,
            "loss.weights": {"dice": 1.0, "bce": 1.0, "iou_mse": 1.0}, **extra}), resume=resume))

    def stage_pretrain(self, kind: Literal["raw", "edge"]) -> Path:
        out = self.out / f"pretrain-{kind}"
        if not is_model_folder(out / "model"):
            self.say(f"pretrain-{kind}: all modalities, {'raw' if kind == 'raw' else self.cfg.edge} images, GT boxes")
        edge = "none" if kind == "raw" else self.cfg.edge
        return self._train(out, self.cfg.pretrain, self.stage_split(), self.stage_distill(),
                           {"data.edge": edge, "data.box_prompt": "gt", "data.box_shift": self.cfg.box_shift},
                           f"pretrain-{kind}")

    def stage_finetune(self, kind: Literal["raw", "edge"], subset: str) -> Path:
        out = self.out / "finetune" / kind / subset
        manifest = out.parent / f"{subset}.csv"
        if not is_model_folder(out / "model"):
            self.say(f"finetune {kind} → {subset}: raw images, whole-image box")
            mine = [e for e in self.entries() if subset_of(e, self.cfg.data.target_of) == subset]
            write_manifest(mine, manifest)
        return self._train(out, self.cfg.finetune, manifest, self.stage_pretrain(kind),
                           {"data.edge": "none", "data.box_prompt": "whole", "data.box_shift": 0}, f"finetune-{kind}")

    # ---- scoring ----------------------------------------------------------------------------------------------
    def _score(self, csv_path: Path, model_for: Callable[[CatalogEntry], Any]) -> list[dict[str, Any]]:
        from medseg.evaluation import score_entries

        target_of = self.cfg.data.target_of
        return score_entries([e for e in self.entries() if e.split == "test"], model_for, csv_path=csv_path,
                             columns=lambda e: {"subset": subset_of(e, target_of)})

    def stage_scores(self) -> dict[str, list[dict[str, Any]]]:
        from medseg.inference import Predictor
        from medseg.models import build_model
        from medseg.models.io import load_model
        from medseg.ops.metafeatures import meta_features

        scores = self.out / "scores"
        out: dict[str, list[dict[str, Any]]] = {}
        for kind in ("raw", "edge"):
            cache: dict[str, Predictor] = {}

            def model_for(e: CatalogEntry, kind: str = kind, cache: dict = cache) -> Predictor:
                sub = subset_of(e, self.cfg.data.target_of)
                if sub not in cache:
                    loaded = load_model(self.stage_finetune(kind, sub))  # type: ignore[arg-type]
                    cache[sub] = Predictor.for_model(loaded)
                return cache[sub]

            if not (scores / f"{kind}.csv").is_file():
                self.say(f"scores: {kind}-pretrained fine-tuned models on the test images")
            out[kind] = self._score(scores / f"{kind}.csv", model_for)
        if self.cfg.baseline:
            if not (scores / "lite_medsam.csv").is_file():
                self.say("scores: prompt-free LiteMedSAM (the baseline)")
            base = Predictor(build_model("lite_medsam", pretrained=self.cfg.teacher_weights or True,
                                         img_size=self.cfg.data.img_size, **self.cfg.teacher),
                             img_size=self.cfg.data.img_size)
            out["lite_medsam"] = self._score(scores / "lite_medsam.csv", lambda e: base)
        feats = scores / "features.csv"
        if not feats.is_file():
            rows = []
            for e in [e for e in self.entries() if e.split == "test"]:
                for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero"):
                    rows.append({"modality": s.modality, "dataset": s.dataset, "case": s.case_id,
                                 **meta_features(s.image)})
            write_csv(rows, feats)
        with open(feats, newline="") as f:
            out["features"] = list(csv.DictReader(f))
        return out

    # ---- analysis and report ----------------------------------------------------------------------------------
    def stage_report(self) -> Path:
        from medseg.experiments.cmmc_analysis import paired_rows, regression_table, routing_table, significance_table
        from medseg.experiments.cmmc_plots import plot_report
        from medseg.routing import FITTERS

        scores = self.stage_scores()
        rep = self.out / "report"
        rows = paired_rows(scores["raw"], scores["edge"], scores["features"])
        r = self.cfg.routing
        sig, reg = significance_table(rows), regression_table(rows, r.features)
        write_csv(sig, rep / "significance.csv")
        write_csv(reg, rep / "table1_regression.csv")
        sections = ["# CMMC experiment report", "", f"Config: `{self.out / 'config.yaml'}`.", "",
                    "## Raw vs edge pre-training per modality (paired t-test, Wilcoxon; score = (DSC + NSD) / 2 ×100)",
                    "", format_markdown_table(sig, digits=3), "",
                    "## Table 1: regression of (edge − raw) on each meta-feature", "",
                    format_markdown_table(reg, digits=4), ""]
        aggregates = []
        routers: dict[str, Any] = {}
        for name in r.routers:
            for protocol in ("cv", "holdout"):
                table, agg = routing_table(rows, router=name, features=r.features, protocol=protocol, folds=r.folds,
                                           seed=self.cfg.seed, n_boot=r.n_boot)
                suffix = "" if protocol == "cv" else "_holdout"
                write_csv(table, rep / f"table2_{name}{suffix}.csv")
                aggregates.append(agg)
                how = (f"{r.folds}-fold cross-validated" if protocol == "cv"
                       else "the paper's protocol: fitted on a seeded 80 %, tested on the other 20 %")
                sections += [f"## Table 2, {name} router ({how})", "", format_markdown_table(table, digits=3), ""]
            per_mod = {}
            for mod in sorted({x["modality"] for x in rows}):
                mine = [x for x in rows if x["modality"] == mod]
                rule = FITTERS[name]({f: [float(x[f]) for x in mine] for f in r.features},
                                     [x["score_raw"] for x in mine], [x["score_edge"] for x in mine])
                per_mod[mod] = rule.to_dict()
            routers[name] = per_mod
        write_csv(aggregates, rep / "routers_aggregate.csv")
        sections += ["## Aggregate over modalities (routed vs single models; 95 % stratified bootstrap of the gain)",
                     "", format_markdown_table(aggregates, digits=3), ""]
        if "lite_medsam" in scores:
            sections += self._baseline_section(scores)
        atomic_write_text(rep / "routers.json", json.dumps({
            "kind": "cmmc-router", "a": "raw", "b": "edge", "features": r.features, "routers": routers,
            "models": {kind: {s: str(self.out / "finetune" / kind / s / "model") for s in self.subsets()}
                       for kind in ("raw", "edge")}}, indent=1))
        plot_report(rows, rep, routers=routers.get("threshold"),
                    baseline=scores.get("lite_medsam"), features=r.features)
        sections += ["## Plots", "", "![score difference vs entropy](diff_vs_entropy.png)", "",
                     "![scores per modality](scores_box.png)", ""]
        if "threshold" in routers:
            sections += ["![routing decisions of the threshold router](routing_decisions.png)", ""]
        return self.write_report(rep / "report.md", sections)

    def _baseline_section(self, scores: dict[str, list[dict[str, Any]]]) -> list[str]:
        means = {k: group_means(scores[k], "modality") for k in ("lite_medsam", "raw", "edge")}
        out = [{"modality": mod, **{f"dice_{k}": means[k].get(mod, float("nan")) for k in means}}
               for mod in sorted({r["modality"] for r in scores["raw"]})]
        write_csv(out, self.out / "report" / "vs_lite_medsam.csv")
        return ["## Prompt-free Dice: fine-tuned models vs LiteMedSAM (image-region box)", "",
                format_markdown_table(out, digits=3), ""]

    def run(self) -> Path:
        """Every stage in order (each skipped when done); returns the report.

        Raises:
            MedsegError: a stage folder was built from other settings than the config's (see :meth:`_claim`).
        """
        self.begin()
        self._timed("split", self.stage_split)
        self._timed("distill", self.stage_distill)
        for kind in ("raw", "edge"):
            self._timed(f"pretrain-{kind}", lambda kind=kind: self.stage_pretrain(kind))
        for kind in ("raw", "edge"):
            self._timed(f"finetune-{kind}", lambda kind=kind: [self.stage_finetune(kind, s) for s in self.subsets()])
        self._timed("scores", self.stage_scores)
        return self._timed("report", self.stage_report)
