"""``pretrain``: SimSiam/BYOL/DINO through the Lightning engine on synthetic images; the saved model is the whole
segmentation model with a changed encoder and an untouched decoder; encoder-only transfer loads just the encoder;
a killed pre-training resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medseg.data import generate_dataset
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.models.io import load_model, save_model_folder
from medseg.ssl.pretrain import load_ssl_config, pretrain
from medseg.training.base_module import init_from_folder
from tests.conftest import tiny_model_config

OPTS = {k: v for k, v in tiny_model_config("resnet_unet").items() if k != "img_size"}
SMALL = {"simsiam": {"proj_dim": 32, "pred_dim": 8}, "byol": {"hidden_dim": 32, "proj_dim": 16},
         "dino": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}}


def _cfg(tmp_path: Path, root: Path, method: str, steps: int = 4, out: str = "run", final: str = "best"):
    return load_ssl_config(None, [f"trainer.final_weights={final}",
        f"out_dir={tmp_path / out}", f"data.root={root}", "data.img_size=32", "data.val_fraction=0.25",
        "model.name=resnet_unet", f"model.options={json.dumps(OPTS)}", f"method={method}",
        f"method_options={json.dumps(SMALL[method])}", "trainer.accelerator=cpu", "trainer.progress_bar=false",
        "trainer.batch_size=4", f"trainer.max_steps={steps}", "trainer.max_epochs=-1",
        "trainer.checkpoint_every_n_steps=2", "optim.lr=1e-3"])


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("d"), per_modality=6, size=40, seed=0,
                            modalities=("xray", "dermoscopy"))


@pytest.mark.parametrize("method", ["simsiam", "byol", "dino"])
def test_pretraining_changes_the_encoder_only(tmp_path: Path, root: Path, method: str) -> None:
    cfg = _cfg(tmp_path, root, method)
    torch.manual_seed(cfg.seed)  # the module builds the model after seed_everything(seed): rebuild it the same way
    result = pretrain(cfg)
    assert result.global_step == 4 and result.model_dir is not None
    loaded = load_model(result.model_dir)
    assert loaded.meta["pretrained_with"] == method
    import lightning as L

    L.seed_everything(cfg.seed, verbose=False)
    start = build_model("resnet_unet", **OPTS).state_dict()
    after = loaded.model.state_dict()
    enc = [k for k in after if k.startswith("encoder.") and after[k].is_floating_point() and "running" not in k]
    dec = [k for k in after if not k.startswith("encoder.")]
    assert any(not torch.equal(start[k], after[k]) for k in enc)
    assert all(torch.equal(start[k], after[k]) for k in dec)


def test_encoder_only_transfer_loads_the_encoder_and_keeps_the_decoder(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_model("resnet_unet", **OPTS)
    save_model_folder(source, tmp_path / "src", name="resnet_unet", options=OPTS, img_size=32)
    torch.manual_seed(2)
    target = build_model("resnet_unet", **OPTS)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    kept = init_from_folder(target, tmp_path / "src", "encoder")
    now, src = target.state_dict(), source.state_dict()
    assert kept and all(not k.startswith("encoder.") for k in kept)
    for k in now:
        assert torch.equal(now[k], src[k] if k.startswith("encoder.") else before[k]), k
    other = build_model("resnet_unet", **{**OPTS, "base_width": 16, "decoder_channels": (32, 16, 16, 8, 8)})
    with pytest.raises(MedsegError, match="encoder does not match"):
        init_from_folder(other, tmp_path / "src", "encoder")


def test_a_killed_pretraining_resumes_to_the_same_weights(tmp_path: Path, root: Path) -> None:
    """A run killed after its step-2 checkpoint resumes there and ends with the weights of an uninterrupted run."""
    import lightning as L

    class Kill(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if trainer.global_step == 2:
                raise KeyboardInterrupt

    # the last weights: a validation that ran after the step-2 checkpoint and before the kill is not repeated on
    # resume, so best-on-validation selection can differ (Lightning saves step checkpoints before validating)
    full = pretrain(_cfg(tmp_path, root, "byol", steps=4, out="full", final="last"))
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        pretrain(_cfg(tmp_path, root, "byol", steps=4, out="part", final="last"), extra_callbacks=[Kill()])
    assert not (tmp_path / "part" / "model").exists()
    resumed = pretrain(_cfg(tmp_path, root, "byol", steps=4, out="part", final="last"), resume=True)
    assert resumed.global_step == 4
    a, b = load_model(full.model_dir).model.state_dict(), load_model(resumed.model_dir).model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_the_pretrain_command_saves_a_model(tmp_path: Path, root: Path, capsys) -> None:
    from medseg.cli.main import main

    rc = main(["pretrain", f"out_dir={tmp_path / 'cli'}", f"data.root={root}", "data.img_size=32",
               "model.name=resnet_unet", f"model.options={json.dumps(OPTS)}", "method=simsiam",
               f"method_options={json.dumps(SMALL['simsiam'])}", "trainer.accelerator=cpu",
               "trainer.progress_bar=false", "trainer.batch_size=4", "trainer.max_steps=2", "trainer.max_epochs=-1"])
    assert rc == 0 and "model:" in capsys.readouterr().out
    assert load_model(tmp_path / "cli" / "model").meta["pretrained_with"] == "simsiam"
