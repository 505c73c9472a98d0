"""Training a task model (ESP-MedSAM) through the shared engine: one task per target, the SPPG and classifier terms
in the loss, the task list saved with the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medseg.data import generate_dataset
from medseg.losses import CompositeLoss
from medseg.models.io import load_model
from medseg.training import load_config, train
from tests.conftest import tiny_model_config

OPTS = {k: v for k, v in tiny_model_config("esp_medsam").items() if k not in ("img_size", "tasks")}


def test_esp_medsam_trains_with_every_term_and_saves_its_tasks(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", per_modality=6, size=48, seed=0, modalities=("xray", "fundus"))
    cfg = load_config(None, [
        f"out_dir={tmp_path / 'run'}", f"data.root={root}", "data.val_fraction=0.34", "data.img_size=64",
        "data.heads=per_target", "model.name=esp_medsam", f"model.options={json.dumps(OPTS)}",
        "loss.weights={focal: 0.7, dice: 0.3, patch_bce: 1.0, task_ce: 1.0}", "trainer.accelerator=cpu",
        "trainer.progress_bar=false", "trainer.batch_size=4", "trainer.max_steps=3", "trainer.max_epochs=-1",
        "trainer.log_every_n_steps=1"])
    result = train(cfg)
    loaded = load_model(result.model_dir)
    tasks = loaded.model.tasks
    assert len(tasks) == 2 and json.loads((result.model_dir / "model.json").read_text())["targets"] == tasks
    metrics = (result.out_dir / "logs").rglob("metrics.csv")
    header = next(iter(metrics)).read_text().splitlines()[0]
    assert "train/loss_patch_bce" in header and "train/loss_task_ce" in header and "val/task_accuracy" in header
    with torch.no_grad():
        assert loaded.model(torch.rand(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_task_model_needs_per_target_heads(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", per_modality=2, size=48, seed=0, modalities=("xray",))
    cfg = load_config(None, [f"out_dir={tmp_path / 'run'}", f"data.root={root}", "model.name=esp_medsam",
                             f"model.options={json.dumps(OPTS)}", "data.img_size=64", "trainer.accelerator=cpu"])
    with pytest.raises(ValueError, match="per_target"):
        train(cfg)


def test_aux_terms_are_skipped_without_their_outputs() -> None:
    loss = CompositeLoss({"dice": 1.0, "patch_bce": 1.0, "task_ce": 1.0})
    logits, target = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    _, parts = loss(logits, target)
    assert set(parts) == {"dice"}
    _, parts = loss(logits, target, aux={"patch_logits": torch.zeros(2, 1, 4, 4), "task_logits": torch.zeros(2, 3),
                                         "task": torch.tensor([0, 2])})
    assert set(parts) == {"dice", "patch_bce", "task_ce"}
    assert torch.isclose(parts["task_ce"], torch.log(torch.tensor(3.0)))
    assert torch.isclose(parts["patch_bce"], torch.log(torch.tensor(2.0)))
