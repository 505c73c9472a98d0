"""Native-resolution training: validation by sliding window equals the prediction path; one output per target."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data import generate_dataset, load_samples
from medseg.inference import Predictor
from medseg.metrics import dice
from medseg.models.io import load_model
from medseg.training import load_config, train
from medseg.training.datamodule import SegmentationDataModule
from medseg.training.module import _own_output

BASE = ["model.name=basic_unet", "model.options={features: [4, 4, 8, 8, 16, 4], norm: batch}", "data.img_size=32",
        "data.patch_size=32", "data.patches_per_epoch=4", "trainer.batch_size=2", "trainer.max_steps=4",
        "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
        "trainer.final_weights=last", "data.val_fraction=0.34", "optim.scheduler=none", "optim.lr=0.01"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), per_modality=6, size=48, seed=2,
                            modalities=("microscopy", "dermoscopy"))


def _val_dice(model_dir: Path, cfg, channel_of=lambda e: 0) -> float:
    loaded = load_model(model_dir)
    dm = SegmentationDataModule(cfg.data, batch_size=2, seed=cfg.seed, cache_root=cfg.out_dir / "cache")
    scores = []
    for e in dm.entries()[1]:
        p = Predictor(loaded.model, img_size=32, tile=loaded.tile, overlap=loaded.overlap, channel=channel_of(e))
        for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero"):
            scores.append(dice(p.predict([s.image])[0].mask, s.binary_mask()))
    return float(np.mean(scores))


def test_sliding_window_validation_equals_prediction(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(None, [*BASE, f"out_dir={tmp_path / 'run'}", f"data.root={data_root}"])
    result = train(cfg)
    meta = json.loads((result.model_dir / "model.json").read_text())
    assert meta["tile"] == 32 and meta["weights"] == "last"
    assert result.metrics["val/dice"] == pytest.approx(_val_dice(result.model_dir, cfg), abs=1e-4)


def test_one_output_per_target(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(None, [*BASE, f"out_dir={tmp_path / 'run'}", f"data.root={data_root}",
                             "data.heads=per_target"])
    result = train(cfg)
    loaded = load_model(result.model_dir)
    assert len(loaded.targets) == 2 and loaded.model(torch.zeros(1, 3, 32, 32)).shape[1] == 2
    channel = {t: i for i, t in enumerate(loaded.targets)}
    assert result.metrics["val/dice"] == pytest.approx(
        _val_dice(result.model_dir, cfg, lambda e: channel[e.dataset]), abs=1e-4)
    with pytest.raises(ValueError, match="choose the target"):
        loaded.channel(None)
    with pytest.raises(ValueError, match="unknown target"):
        loaded.channel("nope")


def test_shared_targets_share_an_output(tmp_path: Path, data_root: Path) -> None:
    cfg = load_config(None, [*BASE, f"data.root={data_root}", "data.heads=per_target"])
    dm = SegmentationDataModule(cfg.data, batch_size=2, seed=0, cache_root=tmp_path)
    names = sorted({e.dataset for e in dm.entries()[0]})
    cfg2 = load_config(None, [*BASE, f"data.root={data_root}", "data.heads=per_target",
                              "data.target_of={" + ", ".join(f"{n}: same" for n in names) + "}"])
    assert SegmentationDataModule(cfg2.data, batch_size=2, seed=0, cache_root=tmp_path).targets() == ["same"]


def test_own_output_picks_each_images_channel() -> None:
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    got = _own_output(logits, torch.tensor([2, 0]))
    torch.testing.assert_close(got[0, 0], logits[0, 2])
    torch.testing.assert_close(got[1, 0], logits[1, 0])
    assert _own_output(logits[:, :1], torch.tensor([0, 0])) is not None


def test_edge_training_is_recorded_and_applied_at_prediction(tmp_path: Path, data_root: Path) -> None:
    from medseg.ops.edges import edge_filter_numpy

    cfg = load_config(None, [*BASE, f"out_dir={tmp_path / 'run'}", f"data.root={data_root}", "data.edge=sobel"])
    result = train(cfg)
    loaded = load_model(result.model_dir)
    assert loaded.edge == "sobel"
    dm = SegmentationDataModule(cfg.data, batch_size=2, seed=0, cache_root=cfg.out_dir / "cache")
    from medseg.training.dataset import open_cache

    split = open_cache(dm.caches()[0])
    e = dm.entries()[0][0]
    raw = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0].image
    np.testing.assert_array_equal(split.native_image(0), edge_filter_numpy(raw, "sobel"))
    p = Predictor(loaded.model, img_size=32, tile=32, edge=loaded.edge)
    q = Predictor(loaded.model, img_size=32, tile=32)
    np.testing.assert_array_equal(p.predict([raw])[0].prob, q.predict([edge_filter_numpy(raw, "sobel")])[0].prob)


def test_grey_training_is_recorded_and_applied_before_the_edge_at_prediction(tmp_path: Path, data_root: Path) -> None:
    from medseg.ops import grey_rgb, prepare_input

    cfg = load_config(None, [*BASE, f"out_dir={tmp_path / 'run'}", f"data.root={data_root}", "data.color=grey",
                             "data.edge=sobel"])
    loaded = load_model(train(cfg).model_dir)
    assert (loaded.color, loaded.edge) == ("grey", "sobel")
    dm = SegmentationDataModule(cfg.data, batch_size=2, seed=0, cache_root=cfg.out_dir / "cache")
    from medseg.training.dataset import open_cache

    e = dm.entries()[0][0]
    raw = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode="nonzero")[0].image
    expected = prepare_input(raw, color="grey", edge="sobel")
    np.testing.assert_array_equal(open_cache(dm.caches()[0]).native_image(0), expected)
    p = Predictor.for_model(loaded)  # the patch-trained model's own tile and overlap
    assert (p.tile, p.overlap) == (32, loaded.overlap)
    q = Predictor(loaded.model, img_size=32, tile=32, edge="sobel")
    np.testing.assert_array_equal(p.predict([raw])[0].prob, q.predict([grey_rgb(raw)])[0].prob)


def test_model_init_starts_from_a_model_folder(tmp_path: Path, data_root: Path) -> None:
    from medseg.errors import MedsegError
    from medseg.training.module import SegmentationModule

    first = train(load_config(None, [*BASE, f"out_dir={tmp_path / 'a'}", f"data.root={data_root}"]))
    cfg = load_config(None, [*BASE, f"data.root={data_root}", f"model.init={first.model_dir}"])
    module = SegmentationModule(cfg.model_dump(mode="json"))
    ref = load_model(first.model_dir).model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in module.model.state_dict().items())
    other = load_config(None, [*BASE, f"data.root={data_root}", f"model.init={first.model_dir}",
                               "model.options={features: [8, 8, 8, 8, 16, 8], norm: batch}"])
    with pytest.raises(MedsegError, match="do not match"):
        SegmentationModule(other.model_dump(mode="json"))
