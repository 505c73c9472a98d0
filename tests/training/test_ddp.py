"""The multi-GPU path without a GPU: two CPU processes (gloo) launched by torchrun train through Lightning DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from medseg.data import generate_dataset


def test_two_process_gloo_ddp_via_torchrun(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "data", per_modality=4, size=48, seed=2, modalities=("dermoscopy", "xray"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medseg", "train", f"out_dir={out}", f"data.root={data}", "data.img_size=48",
           "model.name=lite_medsam",  # SAM family: exercises the find-unused-parameters switch
           "model.options={embed_dims: [8, 16, 24, 32], depths: [1, 1, 1, 1], num_heads: [1, 2, 2, 2], "
           "window_sizes: [7, 7, 7, 7], prompt_embed_dim: 16, decoder_mlp_dim: 32, decoder_heads: 2}",
           "loss.weights={dice: 1.0, bce: 1.0, iou_mse: 1.0}",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
           "trainer.batch_size=2", "trainer.progress_bar=false", "trainer.log_every_n_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model" / "model.safetensors").is_file()
    assert "steps: 2" in proc.stdout
    metrics = next((out / "logs").glob("version_*/metrics.csv")).read_text()
    assert "train/loss" in metrics


_RANK_SCRIPT = '''
import json, sys, torch, lightning as L
from medseg.ssl.pretrain import load_ssl_config, pretrain

class Dump(L.Callback):  # every rank writes a checksum of each parameter (online, target/EMA, heads); BatchNorm
    # running statistics are per rank without sync_batchnorm (DDP broadcasts rank 0's before each forward)
    def on_train_end(self, trainer, module):
        sums = {k: float(v.double().sum()) for k, v in module.named_parameters()}
        with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as f:
            json.dump(sums, f)

pretrain(load_ssl_config(None, sys.argv[2:]), extra_callbacks=[Dump()])
'''


def test_byol_pretraining_under_ddp_keeps_both_ranks_identical(tmp_path: Path) -> None:
    """SSL pre-training on the same engine scales out too: after 3 steps on 2 processes the online network, the EMA
    target and the heads are the same on both ranks (DDP averages the gradients; the EMA runs on each rank)."""
    import json

    from tests.conftest import tiny_model_config

    data = generate_dataset(tmp_path / "data", per_modality=4, size=40, seed=2, modalities=("dermoscopy", "xray"))
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    opts = {k: v for k, v in tiny_model_config("resnet_unet").items() if k != "img_size"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path), f"out_dir={tmp_path / 'run'}", f"data.root={data}", "data.img_size=32",
           "model.name=resnet_unet", f"model.options={json.dumps(opts)}", "method=byol",
           "method_options={hidden_dim: 16, proj_dim: 8}", "trainer.accelerator=cpu", "trainer.devices=2",
           "trainer.strategy=ddp", "trainer.max_steps=3", "trainer.max_epochs=-1", "trainer.batch_size=2",
           "trainer.progress_bar=false", "data.val_fraction=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0.keys() == r1.keys() and any("target" in k or "teacher" in k for k in r0)
    assert all(abs(r0[k] - r1[k]) <= 1e-5 * (1 + abs(r0[k])) for k in r0), \
        [k for k in r0 if abs(r0[k] - r1[k]) > 1e-5 * (1 + abs(r0[k]))][:5]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_task_model_trains_under_ddp(tmp_path: Path) -> None:
    """ESP-MedSAM (per-sample parameter bags, SPPG, per-task queries, classifier) through Lightning DDP."""
    import json

    from tests.conftest import tiny_model_config

    data = generate_dataset(tmp_path / "data", per_modality=4, size=48, seed=2, modalities=("dermoscopy", "xray"))
    opts = {k: v for k, v in tiny_model_config("esp_medsam").items() if k not in ("img_size", "tasks")}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "medseg", "train", f"out_dir={out}", f"data.root={data}", "data.img_size=64",
           "model.name=esp_medsam", f"model.options={json.dumps(opts)}", "data.heads=per_target",
           "data.box_prompt=whole", "loss.weights={focal: 0.7, dice: 0.3, patch_bce: 1.0, task_ce: 1.0}",
           "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
           "trainer.batch_size=2", "trainer.progress_bar=false", "trainer.log_every_n_steps=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["name"] == "esp_medsam" and len(meta["options"]["tasks"]) == 2
