"""What every ``medseg experiment`` shares: typed config sections, the seeded split stage, per-stage settings
records (a stage built from other settings is never reused or resumed), the engine overrides of a training stage,
and the wall time per stage (``timings.json``, summed over resumed runs).

A concrete experiment (:mod:`medseg.experiments.cmmc`, :mod:`medseg.experiments.esp`) subclasses
:class:`StagedExperiment`, declares which config sections each of its stages depends on (``STAGE_INPUTS``), and
implements its stages as idempotent ``stage_*`` methods writing into ``out_dir/<stage>/``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError

from medseg.data import (
    CatalogEntry,
    cap_per_dataset,
    cap_split_parts,
    discover,
    read_manifest,
    stratified_split,
    write_manifest,
)
from medseg.errors import MedsegError
from medseg.models.io import is_model_folder
from medseg.training.config import HardwareConfig, Strict
from medseg.utils.atomic import atomic_write_text


class ExperimentData(Strict):
    """The data: a catalogue root, the model input size, an optional cap per dataset (the CPU scale), target names
    per dataset (datasets with one target name are one subset / task), split group rules, and the input colour of
    every trained model (``grey``: BT.601 grey in all three channels, :func:`medseg.ops.prepare_input`)."""

    root: Path = Path("../shared/data")
    img_size: int = 256
    max_per_dataset: int | None = Field(None, ge=2)
    target_of: dict[str, str] = Field(default_factory=dict)
    group_rules: dict[str, str] = Field(default_factory=dict)
    color: Literal["rgb", "grey"] = "rgb"


class ExperimentSplit(Strict):
    """Fractions of each dataset for test and validation, and optionally (``keep``) at most so many images per
    dataset of each part, a seeded sample taken *after* the split: the parts stay subsets of the uncapped split's,
    so a model trained on the uncapped split's training part (e.g. the ``universal`` head) has seen none of the
    capped test images."""

    test: float = Field(0.2, gt=0, lt=1)
    val: float = Field(0.1, ge=0, lt=1)
    keep: dict[Literal["train", "val", "test"], int] = Field(default_factory=dict)


class StageConfig(Strict):
    """One training stage: optimiser steps, batch, learning rate, weight decay."""

    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = 5e-5
    weight_decay: float = 0.01
    #: submodules kept fixed in this stage (e.g. ``[image_encoder]``: decoder-only fine-tuning, the CPU scale)
    freeze: list[str] = Field(default_factory=list)
    #: parameter-name prefix → factor on ``lr`` (e.g. new heads on a pretrained model), ``optim.lr_multipliers``
    lr_multipliers: dict[str, float] = Field(default_factory=dict)
    #: validations in the stage (evenly spaced, always at the last step; each scores the whole validation split)
    validations: int = Field(5, ge=1)
    #: added to the experiment's ``seed`` for this stage's training only (initialisation, batch order,
    #: augmentation): a seed replicate of the stage on the same split
    seed_offset: int = 0


class TrainerOptions(HardwareConfig):
    """Hardware options passed through to every stage (Lightning's own), and the data loaders' workers."""

    num_workers: int = 0


class StagedExperiment:
    """Base of the experiments. ``cfg`` must have ``out_dir``, ``seed``, ``data`` (:class:`ExperimentData`),
    ``split`` (:class:`ExperimentSplit`) and ``trainer`` (:class:`TrainerOptions`).

    Args:
        cfg: the experiment config.
        progress: called with a one-line message when a stage starts.
    """

    #: stage → the config sections its output depends on (the split's are always included)
    STAGE_INPUTS: ClassVar[dict[str, tuple[str, ...]]] = {"split": ("seed", "data", "split")}

    def __init__(self, cfg: Any, progress: Callable[[str], None] = print) -> None:
        self.cfg, self.out, self.say = cfg, Path(cfg.out_dir), progress
        self.cache = self.out / "cache"  # image and embedding caches (content-addressed; sub-pipelines share it)
        self._claimed: set[Path] = set()  # stage records already checked in this run (stage_split is called often)
        self._entries: tuple[tuple[Path, int], list[CatalogEntry]] | None = None

    def begin(self) -> None:
        """Create ``out_dir`` and write the config the run uses (``config.yaml``); every ``run`` starts here."""
        import yaml

        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.yaml", yaml.safe_dump(self.cfg.model_dump(mode="json"), sort_keys=False))

    # ---- data -----------------------------------------------------------------------------------------------
    def stage_split(self) -> Path:
        """``split.csv``: seeded, group-aware, stratified split of ``data.root``, optionally capped per dataset."""
        path = self.out / "split.csv"
        self._claim(self.out / "split.settings.json", "split")
        if path.is_file():
            return path
        c = self.cfg
        entries = cap_per_dataset([e for e in discover(c.data.root)[0] if e.mask is not None],
                                  c.data.max_per_dataset, c.seed)
        split = stratified_split(entries, test=c.split.test, val=c.split.val, seed=c.seed,
                                 group_rules=c.data.group_rules)
        if c.split.keep:
            split = cap_split_parts(split, c.split.keep, c.seed)
        self.say(f"split: {sum(e.split == 'train' for e in split)} train / {sum(e.split == 'val' for e in split)} "
                 f"val / {sum(e.split == 'test' for e in split)} test")
        return write_manifest(split, path)

    def entries(self) -> list[CatalogEntry]:
        """The split's entries (read once per version of ``split.csv``; the stages ask for them often)."""
        path = self.stage_split()
        key = (path, path.stat().st_mtime_ns)
        if self._entries is None or self._entries[0] != key:
            self._entries = (key, read_manifest(path))
        return list(self._entries[1])

    # ---- training stages --------------------------------------------------------------------------------------
    def engine_patch(self, out: Path, manifest: Path, seed_offset: int = 0) -> dict[str, Any]:
        """The part of a stage's :func:`medseg.training.stage_config` patch that every training stage shares:
        output folder, seed (``seed`` + the stage's ``seed_offset``), data and caches, and the hardware
        (:class:`TrainerOptions`)."""
        t = self.cfg.trainer
        return {"out_dir": out, "seed": self.cfg.seed + seed_offset, "data.manifest": manifest,
                "data.cache_dir": self.cache, "data.color": self.cfg.data.color, "data.num_workers": t.num_workers,
                "trainer.accelerator": t.accelerator, "trainer.devices": t.devices, "trainer.strategy": t.strategy,
                "trainer.precision": t.precision, "trainer.progress_bar": t.progress_bar}

    def common_patch(self, stage: StageConfig, out: Path, manifest: Path) -> dict[str, Any]:
        """:meth:`engine_patch` plus the optimiser and schedule of a :class:`StageConfig` (AdamW, cosine over
        ``steps``, a few validations counted in steps, ``freeze``)."""
        return {**self.engine_patch(out, manifest, stage.seed_offset), "data.img_size": self.cfg.data.img_size,
                "optim.lr": stage.lr, "optim.weight_decay": stage.weight_decay, "optim.scheduler": "cosine",
                "optim.lr_multipliers": stage.lr_multipliers,
                "trainer.max_steps": stage.steps, "trainer.max_epochs": -1, "trainer.batch_size": stage.batch_size,
                "trainer.checkpoint_every_n_steps": max(10, stage.steps // 10),
                # validation a few times per stage, counted in steps: a small subset's epoch is 1–2 steps, and
                # validating every epoch made validation the main cost of fine-tuning
                "trainer.check_val_every_n_epoch": None,
                "trainer.val_check_interval": _val_interval(stage.steps, stage.validations),
                "model.freeze": stage.freeze}

    def _claim(self, record: Path, stage: str, extra: dict[str, Any] | None = None) -> None:
        """Record (in ``record``, JSON) the settings a stage's output is built from, or refuse to reuse or resume an
        output built from other ones. A stage folder without a record (older runs) is claimed as it is. ``extra``:
        settings of this output beyond the config sections of ``stage`` (e.g. one entry of a section that maps
        names to stages, so that adding an entry does not invalidate the others). An option added to medseg since a
        record was written counts as recorded at its default: for the config's sections through the config's
        schema, for an ``extra`` entry given as a pydantic model through that model's (an entry given as a plain
        dict takes the new keys' current values).

        Raises:
            MedsegError: the recorded settings differ; the message names the sections.
        """
        if record in self._claimed:
            return
        dumped = self.cfg.model_dump(mode="json")
        schemas = {k: type(v) for k, v in (extra or {}).items() if isinstance(v, BaseModel)}
        entries = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in (extra or {}).items()}
        now = {**{k: dumped[k] for k in self.STAGE_INPUTS[stage]}, **entries}
        if record.is_file():
            recorded = json.loads(record.read_text())
            sections = {k: v for k, v in recorded.items() if k not in entries}
            try:  # through the schema: an option added to medseg since (with its default) is not a change
                full = type(self.cfg).model_validate({**dumped, **sections}).model_dump(mode="json")
                before = {k: full[k] for k in sections}
            except ValidationError:  # an option medseg no longer has: compared as recorded (a change)
                before = dict(sections)
            try:  # a section this stage depends on since it was built: a change only if not at its default
                defaults = type(self.cfg).model_validate({}).model_dump(mode="json")
            except ValidationError:
                defaults = {}
            for k in set(now) - set(recorded):
                if k in defaults:
                    before[k] = defaults[k]
            for k in set(recorded) & set(entries):  # an option added to an extra entry since is not a change either
                before[k] = _recorded_entry(recorded[k], entries[k], schemas.get(k))
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                raise MedsegError(f"{record.parent}: this stage was built with other {', '.join(changed)} settings "
                                  "than the config's. Put the old values back, use a new out_dir, or delete the "
                                  "stage's folder to rebuild it (and the stages after it).")
        else:
            record.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(record, json.dumps(now, indent=1, sort_keys=True))
        self._claimed.add(record)

    def _engine_stage(self, out: Path, stage: str, run: Callable[[bool], Any],
                      extra: dict[str, Any] | None = None) -> Path:
        """What every training stage shares: claim ``stage``'s settings (and ``extra``, see :meth:`_claim`;
        ``out/settings.json``), reuse a finished
        ``out/model``, or call ``run(resume)`` (``resume``: ``out/checkpoints/last.ckpt`` exists, the engine's exact
        resume after a kill), which returns the engine's result (its ``model_dir`` is the stage's output)."""
        self._claim(out / "settings.json", stage, extra)
        if is_model_folder(out / "model"):
            return out / "model"
        return Path(run((out / "checkpoints" / "last.ckpt").is_file()).model_dir)

    def _timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` and add its wall time to ``out_dir/timings.json`` (stage → seconds, summed over resumed runs,
        so a run interrupted and resumed still shows what each stage cost)."""
        path = self.out / "timings.json"
        t0 = time.perf_counter()
        result = fn()
        spent = time.perf_counter() - t0
        timings = json.loads(path.read_text()) if path.is_file() else {}
        timings[stage] = round(timings.get(stage, 0.0) + spent, 1)
        atomic_write_text(path, json.dumps(timings, indent=1))
        return result

    def write_report(self, path: Path, sections: list[str]) -> Path:
        """Write ``report.md`` (atomically): ``sections`` (Markdown lines) plus the wall time per stage."""
        rows = self.timings_rows()
        if rows:
            from medseg.evaluation import format_markdown_table

            sections = [*sections, "## Wall time per stage (summed over resumed runs)", "",
                        format_markdown_table(rows, digits=1), ""]
        atomic_write_text(path, "\n".join(sections))
        return path

    def timings_rows(self) -> list[dict[str, Any]]:
        """``timings.json`` as table rows (minutes) with a total; empty before any stage ran."""
        path = self.out / "timings.json"
        if not path.is_file():
            return []
        spent = json.loads(path.read_text())
        rows: list[dict[str, Any]] = [{"stage": k, "minutes": v / 60} for k, v in spent.items()]
        rows.append({"stage": "total (before this report)", "minutes": sum(spent.values()) / 60})
        return rows


def _val_interval(steps: int, times: int = 5) -> int:
    """Validate every this many steps: about ``times`` times per stage (at most), always at the last step."""
    for n in range(max(1, -(-steps // times)), steps + 1):
        if steps % n == 0:
            return n
    return steps


def _recorded_entry(recorded: Any, now: Any, schema: type[BaseModel] | None) -> Any:
    """An ``extra`` entry of a stage record as it compares with ``now``: through ``schema`` (options added since at
    their defaults), or as a dict, keys added since at their ``now`` values; as recorded where neither applies (an
    option the schema no longer has: a change)."""
    if schema is not None and isinstance(recorded, dict):
        try:
            return schema.model_validate(recorded).model_dump(mode="json")
        except ValidationError:
            return recorded
    if isinstance(recorded, dict) and isinstance(now, dict):
        return {**now, **recorded}
    return recorded
