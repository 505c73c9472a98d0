"""Training data: a disk cache of letterboxed images/masks (memory-mapped, shared by all ranks) and a dataset
whose augmentation is a pure function of (seed, draw id), so that a resumed run sees the same batches."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medseg.data import CatalogEntry, load_samples
from medseg.data.geometry import Letterbox, boxes_from_mask, letterbox_image, letterbox_mask

CACHE_VERSION = 1


@dataclass(frozen=True)
class CachedSplit:
    """Arrays of one split: images (N, 3, S, S) float16 in [0, 1], masks (N, S, S) uint8, valid (N, 2) = (h, w),
    and per-row ``info`` dicts (case, modality, dataset, image path)."""

    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    info: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.info)


def _cache_key(entries: Sequence[CatalogEntry], img_size: int, mask_mode: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{img_size}|{mask_mode}".encode())
    for e in entries:
        for p in (e.image, e.mask):
            if p is not None:
                st = Path(p).stat()
                h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}|{e.modality}|{e.dataset}".encode())
    return h.hexdigest()[:16]


def build_cache(entries: Sequence[CatalogEntry], cache_root: str | Path, *, img_size: int, mask_mode: str = "nonzero",
                progress: Callable[[int], None] | None = None) -> Path:
    """Letterbox every (image, mask) slice of ``entries`` into ``cache_root/<key>/`` once; returns that folder.

    The folder is written to a temporary sibling and renamed into place, so a killed run never leaves a partial
    cache. Masks are binarised (union of labels).
    """
    key = _cache_key(entries, img_size, mask_mode)
    dest = Path(cache_root) / key
    if (dest / "meta.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    samples = []
    for e in entries:
        for s in load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset, mask_mode=mask_mode):  # type: ignore[arg-type]
            samples.append((s, str(e.image)))
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    try:
        n = len(samples)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float16,
                                           shape=(n, 3, img_size, img_size))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, img_size, img_size))
        valid = np.zeros((n, 2), dtype=np.int32)
        info = []
        for i, (s, path) in enumerate(samples):
            img, geo = letterbox_image(s.image, img_size)
            images[i] = img.astype(np.float16)
            gt = s.binary_mask()
            masks[i] = letterbox_mask(gt if gt is not None else np.zeros(s.image.shape[:2], bool), geo)
            valid[i] = geo.new_hw
            info.append({"case": s.case_id, "modality": s.modality, "dataset": s.dataset, "image": path})
            if progress is not None:
                progress(1)
        images.flush()
        masks.flush()
        del images, masks
        np.save(tmp / "valid.npy", valid)
        (tmp / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "img_size": img_size, "info": info}))
        try:
            os.replace(tmp, dest)
        except OSError:  # another rank/process finished first
            if not (dest / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def open_cache(folder: str | Path) -> CachedSplit:
    """Memory-map a cache folder written by :func:`build_cache`."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    return CachedSplit(np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "masks.npy", mmap_mode="r"),
                       np.load(folder / "valid.npy"), meta["info"])


class SegmentationDataset(Dataset):
    """Items for training/validation from a :class:`CachedSplit`.

    Index ``i`` may be a *draw id* ``epoch·N + j`` (from :class:`ResumableSampler`): the row is ``i mod N`` and the
    random flips / box jitter come from ``np.random.default_rng((seed, i))``, so augmentation does not depend on
    worker processes, ranks or on how many batches ran before a restart.

    Args:
        split: the cached arrays.
        augment: random horizontal/vertical flips.
        box_prompt: ``gt`` (box around the foreground, whole valid region if empty) or ``whole`` (valid region).
        box_shift: maximal random enlargement of the GT box per side, pixels (LiteMedSAM: 5; 0 in validation).
        seed: augmentation seed.

    Item:
        image (3, S, S) float32 [0, 1]; mask (1, S, S) float32 {0, 1}; box (4,) float32 xyxy in the S×S frame
        (GT box, or the prompt-free box of the image region);
        index () int64 (row).
    """

    def __init__(self, split: CachedSplit, *, augment: bool = False, box_prompt: str = "gt", box_shift: int = 0,
                 seed: int = 0) -> None:
        self.split = split
        self.augment, self.box_prompt, self.box_shift, self.seed = augment, box_prompt, box_shift, seed

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        n = len(self.split)
        row = int(draw) % n
        rng = np.random.default_rng((self.seed, int(draw)))
        image = np.asarray(self.split.images[row], dtype=np.float32)
        mask = np.asarray(self.split.masks[row])
        h, w = (int(v) for v in self.split.valid[row])
        if self.augment:  # flips act on the image region only: the padding stays bottom/right as at inference
            image, mask = image.copy(), mask.copy()
            if rng.random() < 0.5:
                image[:, :h, :w], mask[:h, :w] = image[:, :h, :w][:, :, ::-1], mask[:h, :w][:, ::-1]
            if rng.random() < 0.5:
                image[:, :h, :w], mask[:h, :w] = image[:, :h, :w][:, ::-1, :], mask[:h, :w][::-1, :]
        if self.box_prompt == "gt" and mask.any():
            box = boxes_from_mask(mask, per_component=False, shift=self.box_shift, rng=rng)[0]
            box = np.minimum(box, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)  # jitter stays in the image
        else:
            box = Letterbox((h, w), (h, w), mask.shape[0]).prompt_free_box()
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "box": torch.from_numpy(box),
            "index": torch.tensor(row, dtype=torch.int64),
        }
