"""Encoder distillation end to end at test scale: the student learns the teacher's embeddings and is saved as a
full model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from medseg.data import generate_dataset
from medseg.distill import distill, load_distill_config
from medseg.models.io import load_model
from medseg.training.dataset import open_cache
from tests.conftest import tiny_model_config


def test_student_learns_the_teacher_and_loads_as_a_model(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", per_modality=4, size=48, seed=0, modalities=("xray", "fundus"))
    student = {k: v for k, v in tiny_model_config("lite_medsam_student").items() if k != "img_size"}
    teacher = {k: v for k, v in tiny_model_config("lite_medsam").items() if k != "img_size"}
    cfg = load_distill_config(None, [
        f"out_dir={tmp_path / 'run'}", f"data.root={root}", "data.img_size=64", "data.val_fraction=0.25",
        "model.name=lite_medsam_student", f"model.options={json.dumps(student)}",
        f"teacher.options={json.dumps(teacher)}", "optim.lr=0.003", "optim.scheduler=cosine",
        "trainer.max_steps=30", "trainer.batch_size=4", "trainer.accelerator=cpu", "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1", "trainer.check_val_every_n_epoch=1"])
    assert cfg.trainer.monitor == "val/mse" and cfg.optim.weight_decay == 0.01
    result = distill(cfg)
    logs = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = logs[0].split(",")
    mse = [float(r.split(",")[header.index("val/mse")]) for r in logs[1:] if r.split(",")[header.index("val/mse")]]
    assert mse[-1] < mse[0]  # the student approaches the teacher
    loaded = load_model(result.model_dir)
    assert loaded.name == "lite_medsam_student" and json.loads((result.model_dir / "model.json").read_text())[
        "distilled_from"] == "lite_medsam"
    embed_dir = next((tmp_path / "run" / "cache" / "embeddings").iterdir())
    images = open_cache(next(p for p in (tmp_path / "run" / "cache").iterdir() if p.name != "embeddings"
                             and (p / "meta.json").is_file()))
    with torch.inference_mode():
        out = loaded.model.image_encoder(torch.from_numpy(np.asarray(images.images[:2], dtype=np.float32)))
    assert out.shape[1:] == (32, 16, 16) and embed_dir.is_dir()


def test_mmdkd_distils_the_shared_encoder_and_each_tasks_bag(tmp_path: Path) -> None:
    """MMDKD: the student's shared encoder learns the plain teacher (common), each task's bag the adapted
    teacher (specific); both terms are logged and fall, and the student keeps its task list."""
    from medseg.models import build_model
    from medseg.models.io import save_model_folder

    root = generate_dataset(tmp_path / "d", per_modality=4, size=48, seed=0, modalities=("xray", "fundus"))
    t_opts = {k: v for k, v in tiny_model_config("esp_medsam_teacher").items() if k not in ("img_size", "tasks")}
    torch.manual_seed(0)
    adapted = build_model("esp_medsam_teacher", img_size=64, tasks=["a"], **t_opts)
    with torch.no_grad():  # an "adapted" teacher: its shared bag differs from the plain encoder
        for p in adapted.image_encoder.controller.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    save_model_folder(adapted, tmp_path / "adapted", name="esp_medsam_teacher",
                      options={**t_opts, "tasks": ["a"], "img_size": 64}, img_size=64)
    teacher = {k: v for k, v in t_opts.items() if k in ("embed_dims", "depths", "num_heads", "window_sizes",
                                                          "prompt_embed_dim", "decoder_mlp_dim", "decoder_heads")}
    student = {k: v for k, v in tiny_model_config("esp_medsam").items() if k not in ("img_size", "tasks")}
    cfg = load_distill_config(None, [
        f"out_dir={tmp_path / 'run'}", f"data.root={root}", "data.img_size=64", "data.val_fraction=0.25",
        "data.heads=per_target", "model.name=esp_medsam", f"model.options={json.dumps(student)}",
        f"teacher.options={json.dumps(teacher)}", "specific_teacher.name=esp_medsam_teacher",
        f"specific_teacher.options={json.dumps({**t_opts, 'tasks': ['a']})}",
        f"specific_teacher.init={tmp_path / 'adapted'}", "optim.lr=0.003", "trainer.max_steps=20",
        "trainer.batch_size=4", "trainer.accelerator=cpu", "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1"])
    result = distill(cfg)
    logs = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = logs[0].split(",")
    for term in ("train/mse_common", "train/mse_specific"):
        vals = [float(r.split(",")[header.index(term)]) for r in logs[1:] if r.split(",")[header.index(term)]]
        assert vals[-1] < vals[0], term
    loaded = load_model(result.model_dir)
    assert loaded.name == "esp_medsam" and len(loaded.model.tasks) == 2
    assert len(list((tmp_path / "run" / "cache" / "embeddings").iterdir())) == 4  # 2 teachers × (train, val)
