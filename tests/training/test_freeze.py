"""``model.freeze``: the named submodules get no gradient, no optimiser state and stay in eval mode; training
leaves their weights (and normalisation statistics) untouched; an unknown name is a readable error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medseg.data import generate_dataset
from medseg.models import build_model
from medseg.models.io import load_model, save_model_folder
from medseg.training import load_config, train
from medseg.training.module import SegmentationModule
from tests.conftest import tiny_model_config

OPTS = {k: v for k, v in tiny_model_config("lite_medsam_student").items() if k != "img_size"}
MODEL = ["model.name=lite_medsam_student", f"model.options={json.dumps(OPTS)}", "data.img_size=64"]


def _module(freeze: list[str]) -> SegmentationModule:
    cfg = load_config(None, [*MODEL, f"model.freeze={json.dumps(freeze)}", "optim.scheduler=none"])
    return SegmentationModule(cfg.model_dump(mode="json"))


def test_frozen_parts_have_no_gradient_no_optimiser_state_and_stay_in_eval_mode() -> None:
    module = _module(["image_encoder"])
    module.train()
    module.on_train_batch_start({}, 0)
    enc = module.model.image_encoder
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    assert module.model.mask_decoder.training
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt and not in_opt & {id(p) for p in enc.parameters()}


def test_training_leaves_frozen_weights_untouched(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", per_modality=4, size=48, seed=0, modalities=("xray",))
    torch.manual_seed(0)
    start = build_model("lite_medsam_student", img_size=64, **OPTS)
    save_model_folder(start, tmp_path / "start", name="lite_medsam_student", options={**OPTS, "img_size": 64},
                      img_size=64)
    cfg = load_config(None, [*MODEL, f"out_dir={tmp_path / 'run'}", f"data.root={root}", "data.val_fraction=0.25",
                             "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.batch_size=2",
                             "trainer.max_steps=2", "trainer.max_epochs=-1", "optim.lr=1e-2",
                             f"model.init={tmp_path / 'start'}", "model.freeze=[image_encoder]"])
    before = start.state_dict()
    after = load_model(train(cfg).model_dir).model.state_dict()
    enc = [k for k in before if k.startswith("image_encoder.")]
    dec = [k for k in before if k.startswith("mask_decoder.") and before[k].is_floating_point()]
    changed = [k for k in enc if not torch.equal(before[k], after[k])]
    assert enc and not changed, changed[:5]  # weights and BatchNorm statistics
    assert any(not torch.equal(before[k], after[k]) for k in dec)


def test_unknown_submodule_is_named() -> None:
    with pytest.raises(ValueError, match=r"'encoder' is not a submodule .*image_encoder"):
        _module(["encoder"])
