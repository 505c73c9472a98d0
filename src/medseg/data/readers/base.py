"""Reader/writer contract and the registry by file extension (nnU-Net ``imageio`` style).

Each format is one :class:`BaseReader` subclass that reads a file into an
:class:`~medseg.data.sample.ImageVolume` and writes a mask back in the same format. Readers never let a
library exception escape: missing, empty, truncated or undecodable files raise
:class:`~medseg.errors.InvalidInputError` naming the file.
"""

from __future__ import annotations

import abc
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from medseg.data.sample import ImageVolume
from medseg.errors import InputWarning, InvalidInputError, MedsegError


class BaseReader(abc.ABC):
    """One file format.

    Subclasses set :attr:`name` and :attr:`extensions` and implement :meth:`_read` and :meth:`_write_mask`.
    """

    name: ClassVar[str] = ""
    extensions: ClassVar[tuple[str, ...]] = ()

    def read(self, path: str | Path) -> ImageVolume:
        """Read ``path``.

        Returns:
            :class:`ImageVolume` with ``data`` (S, H, W, C) and ``spacing`` in array order.

        Raises:
            InvalidInputError: the file is missing, empty, truncated or not a valid file of this format.
        """
        p = Path(path)
        if not p.is_file():
            raise InvalidInputError(p, "file not found")
        if p.stat().st_size == 0:
            raise InvalidInputError(p, "file is empty (0 bytes)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                vol = self._read(p)
            except MedsegError:
                raise
            except Exception as exc:
                raise InvalidInputError(p, f"cannot read as {self.name}: {type(exc).__name__}: {exc}") from exc
        for w in caught:  # re-said in one line that names the file (libraries' warnings name none)
            first = str(w.message).strip().splitlines()[0] if str(w.message).strip() else w.category.__name__
            warnings.warn(f"{p}: {first}", InputWarning, stacklevel=2)
        if vol.data.ndim != 4 or 0 in vol.data.shape:
            raise InvalidInputError(p, f"unexpected image shape {vol.data.shape}")
        return vol

    def write_mask(self, labels: np.ndarray, dest: str | Path, source: ImageVolume | None = None) -> Path:
        """Write a mask in this format (atomically).

        Args:
            labels: (H, W) or (S, H, W) bool mask or integer label map.
            dest: output file (a lossy format such as JPEG is replaced by PNG: the returned path says so).
            source: the volume the mask belongs to (header/affine/spacing are copied from it).

        Returns:
            The written path.
        """
        arr = np.asarray(labels)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"mask must be (H, W) or (S, H, W), got {arr.shape}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        dest = Path(dest)
        return self._write_mask(arr, dest, source) or dest

    @abc.abstractmethod
    def _read(self, path: Path) -> ImageVolume: ...

    @abc.abstractmethod
    def _write_mask(self, labels: np.ndarray, dest: Path, source: ImageVolume | None) -> Path | None:
        """Write (S, H, W) integer labels; return the path written if it differs from ``dest``."""


def file_extension(path: str | Path) -> str:
    """Lower-case extension including compound ones (``.nii.gz``)."""
    name = Path(path).name.lower()
    for compound in (".nii.gz",):
        if name.endswith(compound):
            return compound
    return Path(name).suffix


_REGISTRY: dict[str, type[BaseReader]] = {}


def register_reader(cls: type[BaseReader]) -> type[BaseReader]:
    """Class decorator: make ``cls`` the reader for its extensions and its name."""
    for ext in cls.extensions:
        _REGISTRY[ext] = cls
    _REGISTRY[cls.name] = cls
    return cls


def reader_names() -> list[str]:
    return sorted({cls.name for cls in _REGISTRY.values()})


def supported_extensions() -> list[str]:
    return sorted(k for k in _REGISTRY if k.startswith("."))


DicomWindow = str | tuple[float, float] | None


def get_reader(path: str | Path, override: str | None = None, *, dicom_window: DicomWindow = "header"
               ) -> BaseReader:
    """The reader for ``path`` by extension, or the reader named ``override`` (e.g. ``"dicom"`` for DICOM
    files without extension). ``dicom_window`` configures the DICOM reader: ``"header"`` (the file's window),
    ``None`` (no windowing) or ``(center, width)``."""
    key = override if override is not None else file_extension(path)
    cls = _REGISTRY.get(key)
    if cls is None:
        what = f"reader {override!r}" if override else f"file type {key or '(no extension)'!r}"
        raise InvalidInputError(path, f"unsupported {what}; supported: {', '.join(supported_extensions())}")
    return cls(window=dicom_window) if cls.name == "dicom" else cls()  # type: ignore[call-arg]


def parse_dicom_window(text: str) -> DicomWindow:
    """``header`` | ``none`` | ``CENTER,WIDTH`` (command-line form of a DICOM window)."""
    t = text.strip().lower()
    if t == "header":
        return "header"
    if t == "none":
        return None
    try:
        c, w = (float(v) for v in t.split(","))
    except ValueError as exc:
        raise MedsegError(f"DICOM window {text!r}: expected header, none or CENTER,WIDTH (e.g. 40,400)") from exc
    if w <= 0:
        raise MedsegError(f"DICOM window {text!r}: the width must be positive")
    return (c, w)


def read_volume(path: str | Path, reader: str | None = None) -> ImageVolume:
    """Read any supported file (see :func:`get_reader`)."""
    return get_reader(path, reader).read(path)
