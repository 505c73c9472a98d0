"""What the web server keeps: each uploaded file as a :class:`Result` (its slices, masks, the task the model chose,
a history for undo) in a bounded in-memory :class:`ResultStore`, and the :class:`Segmenter` that makes and corrects
them. Nothing here speaks HTTP (:mod:`medseg.serve.app` does).

Privacy and safety: an upload is stored under a random name in the server's own temporary folder (the client's file
name is a label, never a path); the DICOM header stays in memory and is never logged or returned, and a DICOM mask
download carries the study's UIDs but no patient identifiers; every temporary file is removed when its result is
evicted or the server stops.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medseg.data.normalize import to_uint8_rgb
from medseg.data.readers import get_reader
from medseg.data.readers.base import file_extension, supported_extensions
from medseg.data.sample import ImageVolume
from medseg.errors import InputWarning, InvalidInputError
from medseg.models.adapters import adapter_for

#: DICOM keywords never written into a mask the server returns
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientAddress",
                    "OtherPatientIDs", "OtherPatientNames", "PatientTelephoneNumbers", "InstitutionName",
                    "ReferringPhysicianName", "AccessionNumber")


@dataclass
class SliceResult:
    """What the model said about one slice."""

    task: str | None
    probability: float | None
    engine: str
    confident: bool = True
    #: the classifier's posterior over every task (the universal model), for batch routing; never sent to clients
    probs: tuple[float, ...] | None = None


@dataclass
class Result:
    """One uploaded file and its segmentation. Light in memory: the slices as shown live as PNG files in the result's
    folder, the masks as packed bits, the file's header without its pixels (so thousands of results cost little).

    Attributes:
        id: random identifier (the only handle clients have).
        name: the client's file name, shown and used in download names, never as a path.
        ext: the file's format extension (one of the readers').
        path: the upload, in the server's temporary folder.
        folder: this result's files (``slice_<z>.png``).
        meta: what writing the mask in the upload's format needs (NIfTI affine and header; a DICOM header without
            pixel data and patient identifiers; npz volume flag).
        shape: (S, H, W).
        slices: per slice, the model's answer.
        physical: the file gives a pixel spacing (DICOM, NIfTI); ``spacing`` (row, column) in mm then.
        history: (slice, packed mask before, answer before) of every box correction, for undo.
    """

    id: str
    name: str
    ext: str
    path: Path
    folder: Path
    meta: dict[str, Any]
    shape: tuple[int, int, int]
    slices: list[SliceResult]
    physical: bool
    spacing: tuple[float, float]
    packed: list[np.ndarray] = field(default_factory=list)
    history: list[tuple[int, np.ndarray, SliceResult]] = field(default_factory=list)

    def image_file(self, z: int) -> Path:
        """Slice ``z`` as shown: (H, W, 3) uint8 RGB, PNG."""
        return self.folder / f"slice_{z}.png"

    def image(self, z: int) -> np.ndarray:
        with Image.open(self.image_file(z)) as im:
            return np.asarray(im.convert("RGB"))

    def mask(self, z: int) -> np.ndarray:
        """(H, W) bool mask of slice ``z``."""
        h, w = self.shape[1:]
        return np.unpackbits(self.packed[z], count=h * w).reshape(h, w).astype(bool)

    def set_mask(self, z: int, mask: np.ndarray) -> None:
        self.packed[z] = np.packbits(np.asarray(mask, bool).ravel())

    @property
    def masks(self) -> np.ndarray:
        """(S, H, W) bool."""
        return np.stack([self.mask(z) for z in range(self.shape[0])])

    def area_px(self, z: int | None = None) -> int:
        zs = range(self.shape[0]) if z is None else [z]
        return int(sum(int(np.unpackbits(self.packed[k]).sum()) for k in zs))

    def area_mm2(self, z: int | None = None) -> float | None:
        return self.area_px(z) * self.spacing[0] * self.spacing[1] if self.physical else None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no header field, no server path)."""
        s = self.slices[self.shape[0] // 2]
        return {"id": self.id, "name": self.name, "format": self.ext.lstrip("."), "slices": self.shape[0],
                "height": self.shape[1], "width": self.shape[2], "task": s.task,
                "probability": s.probability, "engine": s.engine, "confident": s.confident,
                "area_px": self.area_px(), "area_mm2": self.area_mm2(),
                "spacing_mm": list(self.spacing) if self.physical else None,
                "per_slice": [{"task": r.task, "probability": r.probability, "engine": r.engine,
                               "area_px": self.area_px(z), "area_mm2": self.area_mm2(z)}
                              for z, r in enumerate(self.slices)],
                "can_undo": bool(self.history)}


class ResultStore:
    """Results by id, at most ``max_results`` (the oldest is evicted with its files); thread-safe.

    Args:
        root: the server's temporary folder (created; removed by :meth:`close`).
    """

    def __init__(self, root: Path | None = None, max_results: int = 500) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="medseg-serve-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_results = max_results
        self._items: OrderedDict[str, Result] = OrderedDict()
        self._lock = threading.Lock()

    def new_path(self, client_name: str) -> Path:
        """A fresh upload path: a random name with the client's extension if medseg reads that format (the
        extension picks the reader), else none — the client's name itself is never used."""
        ext = file_extension(client_name)
        return self.root / f"{uuid.uuid4().hex}{ext if ext in supported_extensions() else ''}"

    def add(self, result: Result) -> None:
        with self._lock:
            self._items[result.id] = result
            while len(self._items) > self.max_results:
                _, old = self._items.popitem(last=False)
                old.path.unlink(missing_ok=True)
                shutil.rmtree(old.folder, ignore_errors=True)

    def get(self, rid: str) -> Result | None:
        with self._lock:
            return self._items.get(rid)

    def all(self) -> list[Result]:
        with self._lock:
            return list(self._items.values())

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Segmenter:
    """Reads an upload and segments it with a loaded model; corrects a slice with a box (LiteMedSAM).

    Args:
        loaded: the model (``medseg.models.io.load_model``): ``universal``, a model folder or ``lite_medsam``.
        device: torch device.
        max_pixels: larger images are refused (decompression bombs; Pillow's own limit is 89 Mpx).
        fast, keep_specialists: the universal model's ``--fast`` mode (its fast encoder and head; with
            ``keep_specialists`` the specialist tasks keep their specialist).

    Raises:
        InvalidInputError: ``fast`` for a model other than ``universal``, or a universal model without a fast mode.
    """

    def __init__(self, loaded: Any, *, device: str = "cpu", max_pixels: int = 64_000_000, fast: bool = False,
                 keep_specialists: bool = False) -> None:
        from medseg.inference import Predictor

        self.loaded, self.max_pixels = loaded, max_pixels
        if loaded.name == "universal":
            from medseg.inference.universal import UniversalPredictor

            try:
                self.predictor: Any = UniversalPredictor(
                    loaded.model, device=device, fast=fast, keep_specialists=keep_specialists,
                    min_confidence=float(loaded.meta.get("min_confidence", 0.5)))
            except ValueError as exc:
                raise InvalidInputError(loaded.name, str(exc)) from exc
            self.boxes: Any = self.predictor
        else:
            if fast or keep_specialists:
                raise InvalidInputError(loaded.name, "--fast and --keep-specialists apply to the universal model only")
            self.predictor = Predictor.for_model(loaded, device=device)
            self.boxes = self.predictor if adapter_for(loaded.model).accepts_boxes and not loaded.tile else None

    @property
    def tasks(self) -> list[str]:
        return adapter_for(self.loaded.model).tasks or []

    def read(self, path: Path, name: str) -> tuple[ImageVolume, np.ndarray, str]:
        """(volume, (S, H, W, 3) uint8 slices, reader name) of an upload.

        Raises:
            InvalidInputError: naming the client's file name, never the server's path.
        """
        ext = file_extension(name)
        if ext not in supported_extensions():
            raise InvalidInputError(name, f"unsupported file type {ext or '(no extension)'!r}; supported: "
                                          f"{', '.join(supported_extensions())}")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reader = get_reader(path)
                vol = reader.read(path)
            for w in caught:
                if issubclass(w.category, InputWarning) and "decompression" in str(w.message).lower():
                    raise InvalidInputError(path, "image too large: refused as a possible decompression bomb")
            if vol.data.shape[1] * vol.data.shape[2] > self.max_pixels:
                raise InvalidInputError(path, f"image of {vol.data.shape[1]}×{vol.data.shape[2]} px is over the "
                                              f"server's limit of {self.max_pixels / 1e6:.0f} Mpx")
            return vol, to_uint8_rgb(vol.data, path), reader.name
        except InvalidInputError as exc:
            raise InvalidInputError(name, exc.problem.replace(str(path), name)) from None

    def segment(self, path: Path, name: str) -> Result:
        vol, images, reader = self.read(path, name)
        preds = self.predictor.predict(list(images))
        slices = [SliceResult(p.task, p.task_probability, p.engine or self.loaded.name, p.confident,
                              None if p.task_probs is None else tuple(float(x) for x in p.task_probs)) for p in preds]
        rid = uuid.uuid4().hex
        folder = path.parent / rid
        folder.mkdir()
        for z, im in enumerate(images):
            Image.fromarray(im).save(folder / f"slice_{z}.png")
        result = Result(rid, name, file_extension(name), path, folder, _writable_meta(vol.meta),
                        (int(images.shape[0]), int(images.shape[1]), int(images.shape[2])), slices,
                        reader in ("dicom", "nifti"), (float(vol.spacing[1]), float(vol.spacing[2])))
        result.packed = [np.packbits(p.mask.ravel()) for p in preds]
        return result

    def correct(self, result: Result, z: int, box: tuple[float, float, float, float]) -> None:
        """Replace slice ``z``'s mask by LiteMedSAM's mask for ``box`` (x0, y0, x1, y1 in pixels).

        Raises:
            InvalidInputError: the model has no box-prompted decoder, or the slice or box is out of range.
        """
        if self.boxes is None:
            raise InvalidInputError(result.name, f"{self.loaded.name} takes no box prompts (use --model universal "
                                                 "or lite_medsam)")
        if not 0 <= z < result.shape[0]:
            raise InvalidInputError(result.name, f"slice {z} does not exist (0–{result.shape[0] - 1})")
        h, w = result.shape[1:]
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((min(max(x0, 0), w - 1), min(max(x1, 0), w - 1)))
        y0, y1 = sorted((min(max(y0, 0), h - 1), min(max(y1, 0), h - 1)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise InvalidInputError(result.name, "the box is empty; drag a rectangle over the object")
        pred = self.boxes.predict([result.image(z)], [np.array([[x0, y0, x1, y1]], np.float32)])[0]
        prev = result.slices[z]
        result.history.append((z, result.packed[z], prev))
        result.set_mask(z, pred.mask)
        result.slices[z] = SliceResult(prev.task, prev.probability, "lite_medsam_box", prev.confident, prev.probs)

    def route_as_batch(self, results: list[Result]) -> dict[str, Any]:
        """Route every result's slices as one batch (the universal model's ``--routing batch``): the task prior of
        all of them, estimated from the classifier's stored posteriors, and each slice whose task changes under it
        segmented again as its new task (undoable like a box correction). Slices corrected by a box keep theirs.

        Returns:
            ``{"images": slices considered, "prior": {task: probability}, "changed": [{"id", "name", "slice",
            "from", "to"}]}``.

        Raises:
            InvalidInputError: the model is not the universal one.
        """
        if self.loaded.name != "universal":
            raise InvalidInputError(self.loaded.name, "routing as one batch applies to the universal model only")
        slots = [(r, z) for r in results for z, sl in enumerate(r.slices)
                 if sl.probs is not None and sl.engine != "lite_medsam_box"]
        if not slots:
            return {"images": 0, "prior": {}, "changed": []}
        probs = np.array([r.slices[z].probs for r, z in slots], dtype=np.float64)
        prior = self.predictor.batch_prior(probs)
        changed = []
        for j, ((r, z), k) in enumerate(zip(slots, self.predictor.batch_routes(probs, prior), strict=True)):
            prev, task = r.slices[z], self.tasks[int(k)]
            if task == prev.task:
                continue
            pred = self.predictor.with_task(task).predict([r.image(z)])[0]
            r.history.append((z, r.packed[z], prev))
            r.set_mask(z, pred.mask)
            p = float(probs[j, k])
            r.slices[z] = SliceResult(task, p, pred.engine or self.loaded.name, p >= self.predictor.min_confidence,
                                      prev.probs)
            changed.append({"id": r.id, "name": r.name, "slice": z, "from": prev.task, "to": task})
        return {"images": len(slots), "prior": {t: float(x) for t, x in zip(self.tasks, prior, strict=True)},
                "changed": changed}

    @staticmethod
    def undo(result: Result) -> bool:
        """Undo the last box correction or batch re-routing of a slice; ``False`` when there is none."""
        if not result.history:
            return False
        z, packed, info = result.history.pop()
        result.packed[z], result.slices[z] = packed, info
        return True

    @staticmethod
    def mask_file(result: Result, dest_dir: Path) -> Path:
        """The mask written in the upload's own format and geometry (PNG for JPEG; a DICOM mask without patient
        identifiers), into ``dest_dir``; returns the file."""
        reader = get_reader(result.path)
        source = ImageVolume(np.zeros((1, 1, 1, 1), np.uint8), meta=result.meta)  # the writers read only meta
        stem = result.name[: len(result.name) - len(result.ext)] or "image"
        masks = result.masks.astype(np.uint8)
        return reader.write_mask(masks[0] if masks.shape[0] == 1 else masks,
                                 dest_dir / f"{_safe(stem)}_mask{file_extension(result.path)}", source=source)


def _writable_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """What a mask writer needs of a file's meta, without pixels or patient identifiers: a DICOM header keeps its
    study/series/frame UIDs and geometry, loses the pixel data and :data:`PATIENT_KEYWORDS`."""
    out = {k: meta[k] for k in ("affine", "header", "volume") if k in meta}
    header = out.get("header")
    if header is not None and hasattr(header, "data_element"):
        header = header.copy()
        for keyword in (*PATIENT_KEYWORDS, "PixelData"):
            if keyword in header:
                delattr(header, keyword)
        out["header"] = header
    return out


def _safe(stem: str) -> str:
    """A file-name-safe version of a client's stem (download names only)."""
    kept = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip("._")
    return kept[:80] or "image"
