"""Engine details that bias results: native-resolution validation Dice, plateau on an epoch metric, best-on-
validation weights, early stopping, and a cache written slice by slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medseg.data import CatalogEntry, generate_dataset
from medseg.data.geometry import letterbox_geometry, resize_mask
from medseg.metrics import dice
from medseg.training import load_config, train
from medseg.training.dataset import build_cache, open_cache

BASE = ["model.name=basic_unet", "model.options={features: [4, 4, 8, 8, 16, 4]}", "data.img_size=32",
        "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.batch_size=2", "trainer.log_every_n_steps=1"]


def _non_square(tmp_path: Path, n: int = 4) -> list[CatalogEntry]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)
        m = np.zeros((30, 50), np.uint8)
        m[5 + i:20, 10:40 - i] = 255
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(m).save(tmp_path / "masks" / f"c{i}.png")
        out.append(CatalogEntry(tmp_path / "images" / f"c{i}.png", tmp_path / "masks" / f"c{i}.png", "xray", "d",
                                f"c{i}"))
    return out


def test_cache_keeps_native_masks_and_streams_to_disk(tmp_path: Path) -> None:
    entries = _non_square(tmp_path)
    split = open_cache(build_cache(entries, tmp_path / "cache", img_size=32))
    assert split.images.shape == (4, 3, 32, 32) and split.masks.shape == (4, 32, 32)
    assert isinstance(split.images, np.memmap)
    for i, e in enumerate(entries):
        native = np.asarray(Image.open(e.mask)) > 0
        np.testing.assert_array_equal(split.native_mask(i), native)
        assert tuple(split.valid[i]) == letterbox_geometry(native.shape, 32).new_hw == (19, 32)
    assert build_cache(entries, tmp_path / "cache", img_size=32) == build_cache(entries, tmp_path / "cache",
                                                                                 img_size=32)


def test_validation_dice_is_at_native_resolution(tmp_path: Path) -> None:
    from medseg.training.datamodule import SegmentationDataModule
    from medseg.training.module import SegmentationModule

    entries = _non_square(tmp_path)
    cfg = load_config(None, [*BASE, f"out_dir={tmp_path / 'run'}", f"data.root={tmp_path}"])
    dm = SegmentationDataModule(cfg.data, batch_size=2, seed=0, cache_root=tmp_path / "cache")
    dm.val_set = type("V", (), {"split": open_cache(build_cache(entries, tmp_path / "c2", img_size=32))})()
    module = SegmentationModule(cfg.model_dump(mode="json"))
    module.trainer = type("T", (), {"datamodule": dm})()  # the module only reads trainer.datamodule
    logits = torch.full((2, 1, 32, 32), -5.0)
    logits[:, :, 4:12, 6:26] = 5.0  # a canvas-frame prediction
    got = module._native_dice(logits, torch.tensor([0, 1]))
    for row in (0, 1):
        geo = letterbox_geometry((30, 50), 32)
        pred = resize_mask(logits[row, 0, :geo.new_hw[0], :geo.new_hw[1]].numpy() > 0, (30, 50))
        ref = dice(pred, dm.val_set.split.native_mask(row))
        assert float(got[row]) == pytest.approx(ref, abs=0.02)  # bilinear logits vs nearest mask resize


def test_best_weights_plateau_and_early_stopping(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "d", per_modality=6, size=32, seed=0, modalities=("xray",))
    cfg = load_config(None, [*BASE, f"out_dir={tmp_path / 'run'}", f"data.root={data}", "data.val_fraction=0.34",
                             "trainer.max_epochs=6", "optim.scheduler=plateau", "optim.plateau_patience=0",
                             "optim.plateau_factor=0.5", "trainer.early_stopping_patience=1",
                             "trainer.monitor=val/loss", "trainer.monitor_mode=min", "optim.lr=0.05"])
    result = train(cfg)
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["weights"] == "best" and meta["monitor"] == "val/loss"
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", weights_only=True)
    assert meta["best_step"] == best["global_step"] and isinstance(meta["best_score"], float)
    from medseg.models.io import load_model

    loaded = load_model(result.model_dir).model.state_dict()
    for k, v in loaded.items():
        torch.testing.assert_close(v, best["state_dict"][f"model.{k}"])
    logs = sorted((tmp_path / "run" / "logs").rglob("metrics.csv"))[-1].read_text()
    assert "val/dice" in logs
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    sched = last["lr_schedulers"][0]  # ReduceLROnPlateau state: stepped per epoch on the configured metric
    assert sched["factor"] == 0.5 and sched["patience"] == 0 and sched["last_epoch"] >= 1


def test_a_manifest_test_split_is_never_used_for_validation(tmp_path: Path) -> None:
    from medseg.data import discover, stratified_split, write_manifest
    from medseg.training.datamodule import select_entries

    data = generate_dataset(tmp_path / "d", per_modality=5, size=32, seed=0, modalities=("xray",))
    entries, _ = discover(data)
    m = write_manifest(stratified_split(entries, test=0.4, seed=0), tmp_path / "m.csv")
    cfg = load_config(None, [f"data.manifest={m}"])
    train_rows, val_rows = select_entries(cfg.data, 0)
    assert len(train_rows) == 3 and val_rows == []
