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
from medseg.data.geometry import boxes_from_mask, letterbox_image, letterbox_mask, region_box

CACHE_VERSION = 2


@dataclass(frozen=True)
class CachedSplit:
    """Arrays of one split: images (N, 3, S, S) float16 in [0, 1], masks (N, S, S) uint8, valid (N, 2) = (h, w),
    the ground truth at native resolution (``native_mask(i)`` → (H, W) bool) and per-row ``info`` dicts (case,
    modality, dataset, image path)."""

    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    info: list[dict[str, str]]
    native: np.ndarray
    native_offsets: np.ndarray
    native_shapes: np.ndarray

    def __len__(self) -> int:
        return len(self.info)

    def native_mask(self, i: int) -> np.ndarray:
        """(H, W) bool ground truth of row ``i`` at the image's own resolution."""
        h, w = (int(v) for v in self.native_shapes[i])
        start = int(self.native_offsets[i])
        return np.asarray(self.native[start:start + h * w]).reshape(h, w).astype(bool)


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

    Each slice is written to disk as soon as it is decoded (raw little-endian files, memory-mapped when read),
    so memory stays at one slice whatever the data set size. The folder is written to a temporary sibling and
    renamed into place, so a killed run never leaves a partial cache. Masks are binarised (union of labels);
    the native-resolution masks are kept for validation at the images' own size.
    """
    key = _cache_key(entries, img_size, mask_mode)
    dest = Path(cache_root) / key
    if (dest / "meta.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    try:
        valid, shapes, offsets, info = [], [], [], []
        offset = 0
        with open(tmp / "images.f16", "wb") as fi, open(tmp / "masks.u8", "wb") as fm, \
                open(tmp / "native.u8", "wb") as fn:
            for e in entries:
                samples = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset,
                                       mask_mode=mask_mode)  # type: ignore[arg-type]
                for s in samples:
                    img, geo = letterbox_image(s.image, img_size)
                    gt = s.binary_mask()
                    gt = gt if gt is not None else np.zeros(s.image.shape[:2], bool)
                    fi.write(img.astype("<f2").tobytes())
                    fm.write(letterbox_mask(gt, geo).astype(np.uint8).tobytes())
                    fn.write(gt.astype(np.uint8).tobytes())
                    valid.append(geo.new_hw)
                    shapes.append(gt.shape)
                    offsets.append(offset)
                    offset += gt.size
                    info.append({"case": s.case_id, "modality": s.modality, "dataset": s.dataset,
                                 "image": str(e.image)})
                if progress is not None:
                    progress(1)
        np.save(tmp / "valid.npy", np.asarray(valid, dtype=np.int32).reshape(-1, 2))
        np.save(tmp / "native_shapes.npy", np.asarray(shapes, dtype=np.int64).reshape(-1, 2))
        np.save(tmp / "native_offsets.npy", np.asarray(offsets, dtype=np.int64))
        (tmp / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "img_size": img_size, "n": len(info),
                                                   "info": info}))
        try:
            os.replace(tmp, dest)
        except OSError:  # another rank/process finished first
            if not (dest / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _memmap(path: Path, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


def open_cache(folder: str | Path) -> CachedSplit:
    """Memory-map a cache folder written by :func:`build_cache`."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    n, s = int(meta["n"]), int(meta["img_size"])
    offsets = np.load(folder / "native_offsets.npy")
    shapes = np.load(folder / "native_shapes.npy")
    total = int(offsets[-1] + shapes[-1].prod()) if n else 0
    images = _memmap(folder / "images.f16", "<f2", (n, 3, s, s))
    masks = _memmap(folder / "masks.u8", "u1", (n, s, s))
    native = _memmap(folder / "native.u8", "u1", (total,))
    return CachedSplit(images, masks, np.load(folder / "valid.npy"), meta["info"], native, offsets, shapes)


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
            box = region_box((h, w))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "box": torch.from_numpy(box),
            "index": torch.tensor(row, dtype=torch.int64),
        }
