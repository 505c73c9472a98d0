"""Training a head on cached embeddings: items pair each view's embedding with the mask seen through that view,
``train`` runs the prompt-free head on them with the usual engine, and a run stopped after a checkpoint resumes to
the weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from medseg.data import generate_dataset
from medseg.errors import MedsegError
from medseg.training import load_config, train
from medseg.training.embedding_cache import apply_view, open_embeddings
from medseg.training.embedding_data import CachedEmbeddingDataset, EmbeddingDataModule
from tests.conftest import tiny_model_config

SIZES = ("embed_dims", "depths", "num_heads", "window_sizes", "prompt_embed_dim", "decoder_mlp_dim", "decoder_heads")
LITE = {k: v for k, v in tiny_model_config("lite_medsam").items() if k in SIZES}
HEAD = {k: v for k, v in tiny_model_config("prompt_free_head").items() if k not in ("img_size", "tasks")}


def tiny_lite_medsam_state(name: str, **kwargs) -> dict[str, torch.Tensor]:
    """Stands for the registered LiteMedSAM weights: a tiny LiteMedSAM, the same on every call."""
    from medseg.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("lite_medsam", img_size=64, **LITE).state_dict()


@pytest.fixture()
def root(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
    return generate_dataset(tmp_path / "d", per_modality=5, size=48, seed=0, modalities=("xray", "dermoscopy"))


def _overrides(out: Path, root: Path, steps: int = 6) -> list[str]:
    import json

    source = {"options": {"pretrained": True, **LITE}, "views": ["none", "hflip"], "engine": "eager", "batch_size": 4}
    return [f"out_dir={out}", f"data.root={root}", "data.img_size=64", "data.val_fraction=0.3",
            "data.heads=per_target", "data.box_prompt=whole", f"data.embeddings={json.dumps(source)}",
            "model.name=prompt_free_head", f"model.options={json.dumps({'pretrained': True, **HEAD})}",
            "loss.weights={dice: 1.0, bce: 1.0, patch_bce: 1.0, task_ce: 1.0}", f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1", "trainer.batch_size=3", "trainer.checkpoint_every_n_steps=3",
            "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
            "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=3", "optim.lr=0.01", "seed=1",
            "trainer.final_weights=last"]


def test_items_pair_each_views_embedding_with_its_mask(root: Path, tmp_path: Path) -> None:
    cfg = load_config(None, _overrides(tmp_path / "run", root))
    dm = EmbeddingDataModule(cfg.data, batch_size=3, seed=1, cache_root=tmp_path / "cache")
    dm.setup()
    ds = dm.train_set
    assert isinstance(ds, CachedEmbeddingDataset) and ds.views == ["none", "hflip"]
    assert dm.val_set is not None and dm.val_set.views == ["none"] and len(dm.val_set)
    _, views = dm.embedding_caches()[0]
    seen = set()
    for draw in range(12):
        item = ds[draw]
        row = int(item["index"])
        view = next(v for v in ds.views if np.array_equal(open_embeddings(views[v])[row].astype(np.float32),
                                                          item["image"].numpy()))
        seen.add(view)
        hw = tuple(int(v) for v in ds.split.valid[row])
        np.testing.assert_array_equal(item["mask"][0].numpy(), apply_view(ds.split.masks[row], hw, view))
        assert item["image"].shape == (32, 16, 16) and item["target"] in (0, 1)
    assert seen == {"none", "hflip"}
    assert ds[5]["image"].equal(ds[5]["image"])  # a draw is deterministic


def test_head_trains_on_embeddings_and_resumes_exactly(root: Path, tmp_path: Path) -> None:
    ref = train(load_config(None, _overrides(tmp_path / "ref", root)))
    assert ref.global_step == 6 and ref.model_dir is not None
    import json

    meta = json.loads((ref.model_dir / "model.json").read_text())
    assert meta["name"] == "prompt_free_head" and meta["encoder"]["name"] == "lite_medsam"
    assert meta["targets"] == meta["options"]["tasks"] == ["synthetic_lesions", "synthetic_lungs"]
    assert "val/dice" in (tmp_path / "ref" / "logs" / "version_0" / "metrics.csv").read_text()

    class Killed(Exception):
        pass

    class Stop(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 4:  # one step after the step-3 checkpoint
                raise Killed

    out = tmp_path / "killed"
    with pytest.raises(Killed):
        train(load_config(None, _overrides(out, root)), extra_callbacks=[Stop()])
    resumed = train(load_config(None, _overrides(out, root)), resume=True)
    assert resumed.global_step == 6
    a, b = (load_file(str(p / "model" / "model.safetensors")) for p in (tmp_path / "ref", out))
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_image_model_and_embedding_data_do_not_mix(root: Path, tmp_path: Path) -> None:
    with pytest.raises(MedsegError, match=r"takes images: unset data\.embeddings"):
        train(load_config(None, [*_overrides(tmp_path / "a", root), "model.name=basic_unet", "model.options={}",
                                 "data.heads=single"]))
    no_embeddings = [o for o in _overrides(tmp_path / "b", root) if not o.startswith("data.embeddings")]
    with pytest.raises(MedsegError, match=r"set data\.embeddings"):
        train(load_config(None, no_embeddings))
