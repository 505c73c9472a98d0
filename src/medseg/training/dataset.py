"""Training data: a disk cache of the images and masks (letterboxed and at native resolution, memory-mapped, shared
by all ranks) and datasets whose augmentation is a pure function of (seed, draw id), so that a resumed run sees the
same batches.

* :class:`SegmentationDataset` — whole letterboxed images (the 256² canvas of the SAM family).
* :class:`PatchDataset` — random patches at native resolution (nnU-Net-style foreground oversampling).
* :class:`NativeDataset` — whole images at native resolution (validation by sliding window).
"""

from __future__ import annotations

import functools
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
from medseg.data.augment import (
    AugmentOptions,
    colour_jitter,
    extract_patch,
    flip_rotate,
    intensity,
    patch_centre,
    random_affine,
)
from medseg.data.geometry import boxes_from_mask, letterbox_image, letterbox_mask, minmax_unit, region_box
from medseg.ops.model_input import ModelInput

CACHE_VERSION = 3


@dataclass(frozen=True)
class CachedSplit:
    """Arrays of one split: images (N, 3, S, S) float16 in [0, 1], masks (N, S, S) uint8, valid (N, 2) = (h, w),
    the image and ground truth at native resolution (``native_image(i)`` → (H, W, 3) uint8, ``native_mask(i)`` →
    (H, W) bool) and per-row ``info`` dicts (case, modality, dataset, image path)."""

    images: np.ndarray
    masks: np.ndarray
    valid: np.ndarray
    info: list[dict[str, str]]
    native: np.ndarray
    native_offsets: np.ndarray
    native_shapes: np.ndarray
    native_images: np.ndarray

    def __len__(self) -> int:
        return len(self.info)

    def native_mask(self, i: int) -> np.ndarray:
        """(H, W) bool ground truth of row ``i`` at the image's own resolution."""
        h, w = (int(v) for v in self.native_shapes[i])
        start = int(self.native_offsets[i])
        return np.asarray(self.native[start:start + h * w]).reshape(h, w).astype(bool)

    def native_image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 image of row ``i`` at its own resolution (what the readers return)."""
        h, w = (int(v) for v in self.native_shapes[i])
        start = 3 * int(self.native_offsets[i])
        return np.asarray(self.native_images[start:start + 3 * h * w]).reshape(h, w, 3)


def _cache_key(entries: Sequence[CatalogEntry], img_size: int, mask_mode: str, edge: str, color: str = "rgb") -> str:
    colour = "" if color == "rgb" else f"|{color}"  # RGB caches keep the keys they had before the option existed
    h = hashlib.sha256(f"v{CACHE_VERSION}|{img_size}|{mask_mode}|{edge}{colour}".encode())
    for e in entries:
        for p in (e.image, e.mask):
            if p is not None:
                path = Path(p).resolve()
                st = path.stat()
                h.update(f"{path}|{st.st_size}|{_file_digest(path, st.st_size, st.st_mtime_ns)}|{e.modality}|"
                         f"{e.dataset}".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=65536)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """sha256 of a file's bytes (memoised per size and mtime): a cache key follows the content, so a data folder
    copied again (new mtimes, same bytes) keeps its caches, and a file changed in place invalidates them."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_cache(entries: Sequence[CatalogEntry], cache_root: str | Path, *, img_size: int, mask_mode: str = "nonzero",
                edge: str = "none", color: str = "rgb", progress: Callable[[int], None] | None = None) -> Path:
    """Letterbox every (image, mask) slice of ``entries`` into ``cache_root/<key>/`` once; returns that folder.

    Each slice is written to disk as soon as it is decoded (raw little-endian files, memory-mapped when read),
    so memory stays at one slice whatever the data set size. The folder is written to a temporary sibling and
    renamed into place, so a killed run never leaves a partial cache. Masks are binarised (union of labels);
    the native-resolution images and masks are kept for patch training and validation at the images' own size.
    ``edge`` (an operator of :data:`medseg.ops.EDGE_OPERATORS`, or ``none``) replaces every image by its edge
    magnitude first (CMMC's edge-enhanced pre-training); ``color="grey"`` the grey image, before ``edge``
    (:class:`medseg.ops.ModelInput`, recorded in the model folder and applied again at prediction).
    """
    key = _cache_key(entries, img_size, mask_mode, edge, color)
    dest = Path(cache_root) / key
    if (dest / "meta.json").is_file():
        return dest
    transform = ModelInput(color, edge)  # type: ignore[arg-type]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    try:
        valid, shapes, offsets, info = [], [], [], []
        offset = 0
        with open(tmp / "images.f16", "wb") as fi, open(tmp / "masks.u8", "wb") as fm, \
                open(tmp / "native.u8", "wb") as fn, open(tmp / "native_images.u8", "wb") as fni:
            for e in entries:
                samples = load_samples(e.image, e.mask, modality=e.modality, dataset=e.dataset,
                                       mask_mode=mask_mode)  # type: ignore[arg-type]
                for s in samples:
                    s.image = transform(s.image)
                    img, geo = letterbox_image(s.image, img_size)
                    gt = s.binary_mask()
                    gt = gt if gt is not None else np.zeros(s.image.shape[:2], bool)
                    fi.write(img.astype("<f2").tobytes())
                    fm.write(letterbox_mask(gt, geo).astype(np.uint8).tobytes())
                    fn.write(gt.astype(np.uint8).tobytes())
                    fni.write(np.ascontiguousarray(s.image, dtype=np.uint8).tobytes())
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
                                                   "mask_mode": mask_mode, "edge": edge, "color": color,
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
    native_images = _memmap(folder / "native_images.u8", "u1", (3 * total,))
    return CachedSplit(images, masks, np.load(folder / "valid.npy"), meta["info"], native, offsets, shapes,
                       native_images)


class SegmentationDataset(Dataset):
    """Items for training/validation from a :class:`CachedSplit`.

    Index ``i`` may be a *draw id* ``epoch·N + j`` (from :class:`ResumableSampler`): the row is ``i mod N`` and the
    random flips / intensity changes / box jitter come from ``np.random.default_rng((seed, i))``, so augmentation
    does not depend on worker processes, ranks or on how many batches ran before a restart.

    Args:
        split: the cached arrays.
        augment: augmentations (``None``: none); on the letterbox canvas flips and intensity/gamma act on the image
            region only (90° rotations and the affine are patch-training options).
        box_prompt: ``gt`` (box around the foreground, whole valid region if empty) or ``whole`` (valid region).
        box_shift: maximal random enlargement of the GT box per side, pixels (LiteMedSAM: 5; 0 in validation).
        seed: augmentation seed.
        target_index: dataset → output index of a model with one output per target (``None``: one output).

    Item:
        image (3, S, S) float32 [0, 1]; mask (1, S, S) float32 {0, 1}; box (4,) float32 xyxy in the S×S frame
        (GT box, or the prompt-free box of the image region);
        index () int64 (row); target () int64 (output index, 0 with one output).
    """

    def __init__(self, split: CachedSplit, *, augment: AugmentOptions | None = None, box_prompt: str = "gt",
                 box_shift: int = 0, seed: int = 0, target_index: dict[str, int] | None = None) -> None:
        self.split, self.target_index = split, target_index
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
        if self.augment is not None:  # the image region only: the padding stays bottom/right as at inference
            image, mask = image.copy(), mask.copy()
            flipped = flip_rotate(image[:, :h, :w], mask[:h, :w], rng, AugmentOptions(flips=self.augment.flips))
            image[:, :h, :w], mask[:h, :w] = flipped
            image = intensity(image, rng, self.augment, region=(h, w))
            if self.augment.colour_p > 0 and rng.random() < self.augment.colour_p:
                image = colour_jitter(image, rng, region=(h, w))
        return _item(image, mask, (h, w), row, self.box_prompt, self.box_shift, rng,
                     _target(self.split, row, self.target_index))


def _target(split: CachedSplit, row: int, target_index: dict[str, int] | None) -> int:
    return 0 if target_index is None else target_index[split.info[row]["dataset"]]


def _item(image: np.ndarray, mask: np.ndarray, hw: tuple[int, int], row: int, box_prompt: str, box_shift: int,
          rng: np.random.Generator, target: int = 0) -> dict[str, torch.Tensor]:
    """The batch dict of one image: its box is the (jittered) GT box or the region ``hw`` (top-left)."""
    h, w = hw
    if box_prompt == "gt" and mask.any():
        box = boxes_from_mask(mask, per_component=False, shift=box_shift, rng=rng)[0]
        box = np.minimum(box, [w - 1, h - 1, w - 1, h - 1]).astype(np.float32)  # jitter stays in the image
    else:
        box = region_box((h, w))
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
        "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
        "box": torch.from_numpy(box),
        "index": torch.tensor(row, dtype=torch.int64),
        "target": torch.tensor(target, dtype=torch.int64),
    }


class PatchDataset(Dataset):
    """Random ``patch_size``² patches at native resolution for training.

    Draw id ``i`` (see :class:`SegmentationDataset`) picks row ``i mod N`` (``sampling="image"``) or, with
    ``sampling="dataset"``, a dataset uniformly and then one of its rows; ``np.random.default_rng((seed, i))``
    decides that, whether the patch is centred on foreground (probability ``foreground_oversample``, nnU-Net's one
    third), where it lies, and the augmentations — so patches are deterministic and a resumed run continues the same
    stream. Intensities are min-max scaled with the *whole* image's range (as the sliding-window predictor does); only
    the patch is converted to float.

    Args:
        split: the cached arrays.
        patch_size: patch side P (pixels); images smaller than P are zero-padded, never upscaled.
        foreground_oversample: probability that a patch is centred on a foreground pixel.
        augment: augmentations (``None``: none).
        length: draws per epoch (default: one per image).
        sampling: ``image`` or ``dataset`` (balanced over the datasets of ``split.info``).
        box_prompt, box_shift, seed, target_index: as in :class:`SegmentationDataset` (the box lives in the patch
            frame).

    Item:
        image (3, P, P) float32 [0, 1]; mask (1, P, P) float32 {0, 1}; box (4,) float32; index, target () int64.
    """

    def __init__(self, split: CachedSplit, *, patch_size: int, foreground_oversample: float = 1 / 3,
                 augment: AugmentOptions | None = None, length: int | None = None, box_prompt: str = "gt",
                 box_shift: int = 0, seed: int = 0, target_index: dict[str, int] | None = None,
                 sampling: str = "image") -> None:
        if not 0.0 <= foreground_oversample <= 1.0:
            raise ValueError(f"foreground_oversample must be in [0, 1], got {foreground_oversample}")
        if sampling not in ("image", "dataset"):
            raise ValueError(f"sampling must be 'image' or 'dataset', got {sampling!r}")
        self._by_dataset: list[list[int]] | None = None  # rows per dataset, for balanced sampling
        if sampling == "dataset":
            rows: dict[str, list[int]] = {}
            for i, info in enumerate(split.info):
                rows.setdefault(f"{info['modality']}/{info['dataset']}", []).append(i)
            self._by_dataset = [rows[k] for k in sorted(rows)]
        self.split, self.patch_size, self.foreground_oversample = split, patch_size, foreground_oversample
        self.augment, self.length, self.seed = augment, length, seed
        self.box_prompt, self.box_shift, self.target_index = box_prompt, box_shift, target_index

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.split)

    def __getitem__(self, draw: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, int(draw)))
        if self._by_dataset is None:
            row = int(draw) % len(self.split)
        else:
            members = self._by_dataset[int(rng.integers(len(self._by_dataset)))]
            row = members[int(rng.integers(len(members)))]
        raw = self.split.native_image(row).transpose(2, 0, 1)  # (3, H, W) uint8, a view of the cache
        lo, hi = float(raw.min()), float(raw.max())
        mask = self.split.native_mask(row).astype(np.uint8)
        foreground = rng.random() < self.foreground_oversample
        centre = patch_centre(mask, self.patch_size, rng, foreground=foreground)
        opts = self.augment
        matrix = random_affine(rng, opts) if opts is not None else None
        # min-max over the whole image (as the sliding-window predictor does), applied to the patch only; the
        # padding is ``lo``, i.e. 0 after scaling
        image, mask = extract_patch(raw, mask, centre, self.patch_size, matrix, fill=lo)
        image = (image - lo) / max(hi - lo, 1e-8)
        if opts is not None:
            image, mask = flip_rotate(image, mask, rng, opts)
            image = intensity(image, rng, opts)
            if opts.colour_p > 0 and rng.random() < opts.colour_p:  # no draw when off: older runs replay unchanged
                image = colour_jitter(image, rng)
        return _item(image, mask, (self.patch_size, self.patch_size), row, self.box_prompt, self.box_shift, rng,
                     _target(self.split, row, self.target_index))


class NativeDataset(Dataset):
    """Whole images at native resolution (validation by sliding window; batch size 1, sizes differ).

    Item:
        image (3, H, W) float32 [0, 1] (per-image min-max); mask (1, H, W) float32; box (4,) the image region;
        index, target () int64.
    """

    def __init__(self, split: CachedSplit, target_index: dict[str, int] | None = None) -> None:
        self.split, self.target_index = split, target_index

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, row: int) -> dict[str, torch.Tensor]:
        image = minmax_unit(self.split.native_image(row)).transpose(2, 0, 1)
        mask = self.split.native_mask(row)
        return _item(image, mask, mask.shape, row, "whole", 0, np.random.default_rng(0),
                     _target(self.split, row, self.target_index))
