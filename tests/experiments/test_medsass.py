"""The MedSASS experiment end to end at test scale: pseudo-masks, every pre-training, the fine-tuning grid, scores
and the report; a second run reuses everything; a run killed in a fine-tuning resumes there."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.data import generate_dataset, read_manifest
from medseg.experiments.medsass import MedsassExperiment, load_medsass_config
from tests.conftest import Killed, kill_training_after_checkpoint, tiny_model_config

CNN = {k: v for k, v in tiny_model_config("resnet_unet").items() if k != "img_size"}
VIT = {k: v for k, v in tiny_model_config("vit_unet", img_size=32).items() if k != "img_size"}
SMALL_SSL = {"simsiam": {"proj_dim": 16, "pred_dim": 8}, "byol": {"hidden_dim": 16, "proj_dim": 8},
             "dino": {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8}}


def _config(tmp_path: Path, **changes) -> Path:
    root = generate_dataset(tmp_path / "d", per_modality=8, size=40, seed=0, modalities=("xray", "dermoscopy"))
    path = tmp_path / "medsass.yaml"
    path.write_text(yaml.safe_dump({
        "out_dir": str(tmp_path / "run"), "data": {"root": str(root), "img_size": 32},
        "split": {"test": 0.25, "val": 0.25},
        "archs": {"cnn": {"name": "resnet_unet", "options": CNN}, "vit": {"name": "vit_unet", "options": VIT}},
        "pretrain": {"steps": 2, "batch_size": 4, "validations": 1},
        "finetune": {"steps": 1, "batch_size": 2, "validations": 1}, "surface_metrics": False,
        "ssl": SMALL_SSL, "fractions": [0.1, 1.0], "seeds": [0], "overlays_per_modality": 1,
        "trainer": {"accelerator": "cpu", "progress_bar": False}, **changes}))
    return path


def test_medsass_experiment_runs_every_stage_and_reuses_them(tmp_path: Path) -> None:
    import json

    cfg = load_medsass_config(_config(tmp_path, finetune_epochs=2, finetune_max_steps=3,
                                      data={"root": str(tmp_path / "d"), "img_size": 32, "color": "grey"}))
    said: list[str] = []
    report = MedsassExperiment(cfg, progress=said.append).run()
    text = report.read_text()
    for part in ("## Targets", "end-to-end > encoder-only", "MedSASS ≥ best SSL", "## Paired tests",
                 "How good a teacher Otsu is", "learning_curves.png", "overlays.png", "Wall time per stage"):
        assert part in text, part
    run = tmp_path / "run"
    pseudo = read_manifest(run / "pseudo" / "manifest.csv")
    assert pseudo and all(e.split in ("train", "val") and "pseudo" in str(e.mask) for e in pseudo)
    for arch in ("cnn", "vit"):
        for m in ("medsass", "simsiam", "byol", "dino"):
            assert (run / "pretrain" / arch / m / "model" / "model.json").is_file(), (arch, m)
        for start in ("scratch", "medsass", "medsass_encoder", "simsiam", "byol", "dino"):
            for run_name in ("f0.1-s0", "f1-s0"):
                assert (run / "scores" / arch / start / f"{run_name}.csv").is_file()
    small = read_manifest(run / "finetune" / "cnn" / "scratch" / "f0.1-s0" / "manifest.csv")
    full = read_manifest(run / "finetune" / "cnn" / "scratch" / "f1-s0" / "manifest.csv")
    assert {e.dataset for e in small} == {e.dataset for e in full} and len(small) < len(full)
    # fine-tuning length grows with the subset (2 epochs, at least 1 and at most 3 steps); grey input recorded
    meta = {f: json.loads((run / "finetune" / "cnn" / "scratch" / f / "model" / "model.json").read_text())
            for f in ("f0.1-s0", "f1-s0")}
    assert meta["f0.1-s0"]["trained_steps"] == -(-2 * len(small) // 2) < meta["f1-s0"]["trained_steps"] == 3
    assert all(m["color"] == "grey" for m in meta.values()) and "## Fine-tuning length" in text
    assert (run / "report" / "learning_curves.png").is_file() and (run / "report" / "overlays.png").is_file()
    said.clear()
    MedsassExperiment(cfg, progress=said.append).run()
    assert said == []  # everything cached


def test_a_killed_medsass_experiment_resumes_in_its_fine_tuning(tmp_path: Path, monkeypatch) -> None:
    cfg = load_medsass_config(_config(tmp_path, archs={"cnn": {"name": "resnet_unet", "options": CNN}},
                                      starts=["medsass"], fractions=[1.0], seeds=[0],
                                      finetune={"steps": 12, "batch_size": 2}))
    calls = kill_training_after_checkpoint(monkeypatch, "f1-s0")
    with pytest.raises(Killed):
        MedsassExperiment(cfg, progress=lambda m: None).run()
    MedsassExperiment(cfg, progress=lambda m: None).run()
    assert ("f1-s0", True) in calls
    assert (tmp_path / "run" / "report" / "report.md").is_file()
