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
           "-m", "medseg.cli.main", "train", f"out_dir={out}", f"data.root={data}", "data.img_size=48",
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
