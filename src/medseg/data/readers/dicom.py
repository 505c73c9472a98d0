"""DICOM via pydicom: rescale slope/intercept (modality LUT), windowing, MONOCHROME1 inversion,
multi-frame files as slices. Masks are written as DICOM images that keep the source's patient/study/
series identity and geometry (a new SOP instance, Secondary Capture class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medseg.data.readers.base import BaseReader, register_reader
from medseg.data.sample import ImageVolume
from medseg.errors import InvalidInputError
from medseg.utils.atomic import atomic_path


def _first(value: object) -> float:
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


@register_reader
class DicomReader(BaseReader):
    """DICOM files (``.dcm``; pass ``reader="dicom"`` for files without extension).

    Args:
        window: ``"header"`` — clip to the file's first WindowCenter/WindowWidth when present (default);
            ``None`` — no windowing (the whole value range is rescaled later); ``(center, width)`` — this
            window, in rescaled (e.g. Hounsfield) units.

    The returned data are float64 values after the modality LUT and windowing; ``meta["window"]`` holds the
    window applied.
    """

    name = "dicom"
    extensions = (".dcm", ".dicom")

    def __init__(self, window: str | tuple[float, float] | None = "header") -> None:
        self.window = window

    def _read(self, path: Path) -> ImageVolume:
        ds = pydicom.dcmread(path)
        if "PixelData" not in ds:
            raise InvalidInputError(path, "DICOM file has no pixel data")
        arr = ds.pixel_array.astype(np.float64)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        spp = int(getattr(ds, "SamplesPerPixel", 1))
        if frames == 1:
            arr = arr[None]
        if spp == 1:
            arr = arr[..., None]
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        arr = arr * slope + intercept
        window = self._window(ds)
        if window is not None:
            c, w = window
            arr = np.clip(arr, c - w / 2.0, c + w / 2.0)
        if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
            arr = arr.max() + arr.min() - arr
        sy, sx = (float(v) for v in getattr(ds, "PixelSpacing", (1.0, 1.0)))
        sz = float(getattr(ds, "SpacingBetweenSlices", getattr(ds, "SliceThickness", 1.0)) or 1.0)
        meta = {"window": window, "header": ds, "photometric": getattr(ds, "PhotometricInterpretation", "")}
        return ImageVolume(arr, spacing=(sz, sy, sx), meta=meta)

    def _window(self, ds: pydicom.Dataset) -> tuple[float, float] | None:
        if self.window is None:
            return None
        if isinstance(self.window, tuple):
            return float(self.window[0]), float(self.window[1])
        if "WindowCenter" in ds and "WindowWidth" in ds:
            width = _first(ds.WindowWidth)
            return (_first(ds.WindowCenter), width) if width > 0 else None
        return None

    def _write_mask(self, labels: np.ndarray, dest: Path, source: ImageVolume | None) -> None:
        src = source.meta.get("header") if source is not None else None
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(dest), {}, file_meta=meta, preamble=b"\0" * 128)
        if src is not None:
            for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
                            "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "StudyDate"):
                if keyword in src:
                    setattr(ds, keyword, src.data_element(keyword).value)
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = "OT"
        ds.SeriesDescription = "medseg mask"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        wide = labels.max(initial=0) > 255
        arr = labels.astype(np.uint16 if wide else np.uint8)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(arr.shape[1]), int(arr.shape[2])
        if arr.shape[0] > 1:
            ds.NumberOfFrames = int(arr.shape[0])
        ds.BitsAllocated = ds.BitsStored = 16 if wide else 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 0
        ds.PixelData = (arr if arr.shape[0] > 1 else arr[0]).tobytes()
        with atomic_path(dest) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
