"""Kill-and-resume: a seeded CPU run killed mid-epoch and resumed ends with the weights of an uninterrupted run,
on letterboxed images and on augmented native-resolution patches (sliding-window validation).

8 training images, batch 3 → 3 batches per epoch; the step-4 checkpoint lies mid-epoch (epoch 1, batch 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medseg.data import generate_dataset
from medseg.training import load_config, train

OVERRIDES = [
    "data.img_size=64", "data.val_fraction=0.25", "model.name=basic_unet",
    "model.options={features: [4, 4, 8, 8, 16, 4], norm: batch}", "trainer.max_steps=14", "trainer.batch_size=3",
    "trainer.checkpoint_every_n_steps=4", "trainer.accelerator=cpu", "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1", "loss.weights={dice: 1.0, bce: 1.0}", "optim.lr=0.01",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("synth"), per_modality=6, size=48, seed=3,
                            modalities=("microscopy", "dermoscopy"))


PATCHES = ["data.patch_size=32", "data.augment={flips: true, rot90: true, affine_p: 0.5, intensity_p: 0.5, "
           "gamma_p: 0.5}"]


def _cfg(out: Path, root: Path, extra: list[str] = ()):
    return load_config(None, [f"out_dir={out}", f"data.root={root}", *OVERRIDES, *extra])


@pytest.mark.parametrize("extra", [[], PATCHES], ids=["letterbox", "patches"])
def test_kill_and_resume_matches_uninterrupted(tmp_path: Path, data_root: Path, extra: list[str]) -> None:
    ref = train(_cfg(tmp_path / "ref", data_root, extra))
    assert ref.global_step == 14

    out = tmp_path / "killed"
    script = textwrap.dedent(f"""
        import os, signal
        import lightning as L
        from medseg.training import load_config, train

        class Kill(L.Callback):
            def on_train_batch_end(self, trainer, *args):
                if trainer.global_step == 6:  # 2 steps after the mid-epoch step-4 checkpoint
                    os.kill(os.getpid(), signal.SIGKILL)

        cfg = load_config(None, [{f'out_dir={out}'!r}, {f'data.root={data_root}'!r}, *{OVERRIDES + list(extra)!r}])
        train(cfg, extra_callbacks=[Kill()])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert not (out / "model").exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no partial files

    resumed = train(_cfg(out, data_root, extra), resume=True)
    assert resumed.global_step == 14
    a = load_file(str(ref.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
    if extra:
        meta = json.loads((resumed.model_dir / "model.json").read_text())
        assert meta["tile"] == 32  # predict tiles by default


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path, data_root: Path) -> None:
    cfg = _cfg(tmp_path / "fresh", data_root).model_copy(update={})
    cfg.trainer.max_steps = 2
    r = train(cfg, resume=True)
    assert r.global_step == 2 and (r.model_dir / "model.json").is_file()
    os.environ.pop("MEDSEG_UNUSED", None)
