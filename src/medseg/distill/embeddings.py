"""Teacher embedding cache: the image-encoder output of a teacher (LiteMedSAM: (256, 64, 64)) for every row of an
image cache (:func:`medseg.training.dataset.build_cache`), computed once, stored as fp16, memory-mapped.

* **Content-addressed**: the folder is named by the image cache's key (which hashes the files, sizes and mtimes),
  the teacher's weight digest and the dtype, so a changed image or teacher gives a new cache and an unchanged one
  is reused by every run (CMMC distillation, ESP-MedSAM's MMDKD).
* **Resumable**: rows are written in order into a pre-allocated file and ``progress.json`` records how many are
  done (after the data is flushed); a killed run continues at the first missing row. ``meta.json`` appears only
  when every row is written.

Shapes: ``open_embeddings(folder)`` → (N, C, h, w) float16 memmap, row i = image row i of the image cache.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medseg.inference.engines import model_digest
from medseg.training.dataset import open_cache
from medseg.utils.atomic import atomic_write_text

EMBEDDING_VERSION = 1


def embedding_cache_dir(image_cache: str | Path, teacher: nn.Module, root: str | Path) -> Path:
    """Where the embeddings of ``image_cache`` by ``teacher`` live under ``root``."""
    name = f"{Path(image_cache).name}-{type(teacher).__name__}-{model_digest(teacher)}-v{EMBEDDING_VERSION}"
    return Path(root) / name


@torch.inference_mode()
def build_embedding_cache(image_cache: str | Path, teacher: nn.Module, root: str | Path, *, batch_size: int = 8,
                          device: str | torch.device = "cpu",
                          progress: Callable[[int], None] | None = None) -> Path:
    """Encode every image of ``image_cache`` with ``teacher`` (a module ``(B, 3, S, S) → (B, C, h, w)``, e.g.
    ``lite_medsam.image_encoder``) into ``root/<key>/``; returns that folder. Reuses a finished cache and resumes
    an interrupted one. ``progress(k)`` is called with the number of rows done in each batch."""
    split = open_cache(image_cache)
    dest = embedding_cache_dir(image_cache, teacher, root)
    if (dest / "meta.json").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    teacher = teacher.eval().to(device)
    n = len(split)
    probe = teacher(torch.from_numpy(np.asarray(split.images[:1], dtype=np.float32)).to(device)) if n else None
    shape = tuple(probe.shape[1:]) if probe is not None else (0,)
    state_path = dest / "progress.json"
    done = 0
    if state_path.is_file():
        state = json.loads(state_path.read_text())
        if tuple(state["shape"]) == shape and state["n"] == n:
            done = int(state["done"])
    data_path = dest / "embeddings.f16"
    if n:
        mode = "r+" if done and data_path.is_file() else "w+"
        out = np.memmap(data_path, dtype="<f2", mode=mode, shape=(n, *shape))
        if progress is not None and done:
            progress(done)
        for start in range(done, n, batch_size):
            x = torch.from_numpy(np.asarray(split.images[start:start + batch_size], dtype=np.float32)).to(device)
            out[start:start + len(x)] = teacher(x).float().cpu().numpy().astype("<f2")
            out.flush()  # the rows reach the file before progress.json says they are done
            atomic_write_text(state_path, json.dumps({"n": n, "shape": list(shape), "done": start + len(x)}))
            if progress is not None:
                progress(len(x))
        del out
    atomic_write_text(dest / "meta.json", json.dumps({"version": EMBEDDING_VERSION, "n": n, "shape": list(shape),
                                                      "image_cache": str(Path(image_cache).resolve()),
                                                      "teacher": type(teacher).__name__}))
    return dest


def open_embeddings(folder: str | Path) -> np.ndarray:
    """(N, C, h, w) float16 memory map of a finished embedding cache.

    Raises:
        FileNotFoundError: the cache is missing or unfinished (no ``meta.json``).
    """
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no finished embedding cache (meta.json missing)")
    meta = json.loads(meta_path.read_text())
    shape = (int(meta["n"]), *(int(s) for s in meta["shape"]))
    if shape[0] == 0:
        return np.zeros(shape, dtype=np.float16)
    return np.memmap(folder / "embeddings.f16", dtype="<f2", mode="r", shape=shape)
