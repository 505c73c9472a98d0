"""Embedding cache of a frozen encoder (a distillation teacher, or the encoder a prompt-free head reads): the
image-encoder output (LiteMedSAM: (256, 64, 64)) for every row of an
image cache (:func:`medseg.training.dataset.build_cache`), computed once, stored as fp16, memory-mapped.

* **Content-addressed**: the folder is named by the image cache's key (which hashes the files, sizes and mtimes),
  the teacher's weight digest and the dtype, so a changed image or teacher gives a new cache and an unchanged one
  is reused by every run (CMMC distillation, ESP-MedSAM's MMDKD).
* **Resumable**: rows are written in order into a pre-allocated file and ``progress.json`` records how many are
  done (after the data is flushed); a killed run continues at the first missing row. ``meta.json`` appears only
  when every row is written; it is the cache's manifest (image cache key and its preprocessing, the encoder's class
  and weight digest, the view, the dtype).
* **Views**: a fixed augmentation of every image (:data:`VIEWS`: the flips of the image region, the padding staying
  bottom/right as at inference; ``jitter1``, ``jitter2``: a seeded strong photometric change of each image,
  :func:`medseg.data.augment.colour_jitter`, drawn from the view and the row; ``zoom1``: a seeded crop of 45–90 %
  of the image region resized back over it, :func:`medseg.data.augment.zoom_crop`) is one more cache, named by the view,
  so a head trained on a frozen encoder sees flipped or recoloured images without a single encoder pass per epoch.
  :func:`apply_view` gives the matching mask.

Shapes: ``open_embeddings(folder)`` → (N, C, h, w) float16 memmap, row i = image row i of the image cache (seen
through the folder's view).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.inference.engines import model_digest
from medseg.training.dataset import open_cache
from medseg.utils.atomic import atomic_write_text

EMBEDDING_VERSION = 1
#: fixed views of a letterboxed image: ``none``, the horizontal and the vertical flip of the image region, and two
#: seeded photometric changes of it (:func:`medseg.data.augment.colour_jitter`; masks unchanged), and a seeded zoom
#: into part of it (:func:`medseg.data.augment.zoom_crop`; masks zoomed alike)
VIEWS = ("none", "hflip", "vflip", "jitter1", "jitter2", "zoom1")
JITTER_SEED = 20261205
#: views whose pixels were corrected after caches of them existed (the jitters were first applied to the cache's
#: [0, 1] images as if they were [0, 255], which made gamma a brightness change of up to ×5): their caches are named
#: anew, so an old cache is rebuilt, not reused
VIEW_REVISIONS = {"jitter1": 2, "jitter2": 2}


def _view_rng(view: str, row: int) -> np.random.Generator:
    """The random draw of a seeded view (``jitter<k>``, ``zoom<k>``) for one cache row: the same in every run."""
    family = "zoom" if view.startswith("zoom") else "jitter"
    k = int(view[len(family):])
    return np.random.default_rng((JITTER_SEED, 100 + k if family == "zoom" else k, int(row)))


def apply_view(array: np.ndarray, valid_hw: tuple[int, int], view: str, row: int = 0) -> np.ndarray:
    """``array`` (…, S, S) — a letterboxed image (C, S, S) with values in [0, 1], as the image cache stores it, or a
    mask (S, S) — seen through
    ``view``: the valid region ``[:h, :w]`` flipped, (``jitter<k>``, images only) recoloured by a jitter drawn
    from ``(k, row)``, or (``zoom<k>``) a crop of it drawn from ``(k, row)`` resized back over it (images bilinear,
    masks nearest) — the same for the same cache row in every run; the padding left where it is. Returns a new
    array (``none``: a copy)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose from {', '.join(VIEWS)}")
    out = np.array(array, copy=True)
    h, w = valid_hw
    if view.startswith("zoom"):
        from medseg.data.augment import zoom_crop, zoom_crop_box

        return zoom_crop(out, zoom_crop_box(_view_rng(view, row), (h, w)), (h, w))
    if view.startswith("jitter"):
        if out.ndim == 3:
            from medseg.data.augment import colour_jitter

            out = colour_jitter(out.astype(np.float32), _view_rng(view, row), (h, w))
        return out
    if view == "hflip":
        out[..., :h, :w] = out[..., :h, :w][..., ::-1]
    elif view == "vflip":
        out[..., :h, :w] = out[..., :h, :w][..., ::-1, :]
    return out


def embedding_cache_dir(image_cache: str | Path, teacher: nn.Module, root: str | Path, view: str = "none") -> Path:
    """Where the embeddings of ``image_cache`` by ``teacher`` (seen through ``view``) live under ``root``."""
    suffix = "" if view == "none" else f"-{view}"  # unflipped caches keep the names they had before views
    if view in VIEW_REVISIONS:  # a view whose pixels changed since: its old caches are not reused
        suffix += f"-r{VIEW_REVISIONS[view]}"
    name = f"{Path(image_cache).name}-{type(teacher).__name__}-{model_digest(teacher)}-v{EMBEDDING_VERSION}{suffix}"
    return Path(root) / name


@torch.inference_mode()
def build_embedding_cache(image_cache: str | Path, teacher: nn.Module, root: str | Path, *, batch_size: int = 8,
                          device: str | torch.device = "cpu", view: str = "none", engine: str = "eager",
                          progress: Callable[[int], None] | None = None) -> Path:
    """Encode every image of ``image_cache`` with ``teacher`` (a module ``(B, 3, S, S) → (B, C, h, w)``, e.g.
    ``lite_medsam.image_encoder``), seen through ``view`` (:func:`apply_view`), into ``root/<key>/``; returns that
    folder. Reuses a finished cache and resumes an interrupted one. ``engine``: how the encoder runs
    (:func:`medseg.inference.engines.prepare_engine`; ``optimized`` and ``onnx`` agree with ``eager`` to ~1e-4,
    below fp16's resolution, and are about twice as fast on a CPU); the cache is named by the module's weights
    either way. ``progress(k)`` is called with the number of rows done in each batch."""
    split = open_cache(image_cache)
    dest = embedding_cache_dir(image_cache, teacher, root, view)
    if (dest / "meta.json").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    digest, kind = model_digest(teacher), type(teacher).__name__
    teacher = teacher.eval().to(device)
    if engine != "eager":
        from medseg.inference.engines import prepare_engine

        teacher = prepare_engine(teacher, engine, img_size=int(split.images.shape[-1]))
    n = len(split)

    def batch(start: int, stop: int) -> torch.Tensor:
        rows = [apply_view(np.asarray(split.images[i], dtype=np.float32), tuple(split.valid[i]), view, i)
                for i in range(start, stop)]
        return torch.from_numpy(np.stack(rows)).to(device)

    probe = teacher(batch(0, 1)) if n else None
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
            x = batch(start, min(start + batch_size, n))
            out[start:start + len(x)] = teacher(x).float().cpu().numpy().astype("<f2")
            out.flush()  # the rows reach the file before progress.json says they are done
            atomic_write_text(state_path, json.dumps({"n": n, "shape": list(shape), "done": start + len(x)}))
            if progress is not None:
                progress(len(x))
        del out
    image_meta = json.loads((Path(image_cache) / "meta.json").read_text())
    atomic_write_text(dest / "meta.json", json.dumps({
        "version": EMBEDDING_VERSION, "n": n, "shape": list(shape), "dtype": "float16", "view": view,
        "image_cache": str(Path(image_cache).resolve()), "image_cache_key": Path(image_cache).name,
        "preprocessing": {k: image_meta.get(k) for k in ("img_size", "color", "edge") if k in image_meta},
        "teacher": kind, "teacher_digest": digest, "engine": engine}))
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


@contextmanager
def cache_progress(images: Path, desc: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar over the rows of an image cache (``None`` when disabled); its ``update`` is the ``progress``
    callback of :func:`build_embedding_cache`."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(total=len(open_cache(images).valid), desc=desc, unit="img") as bar:
        yield bar
