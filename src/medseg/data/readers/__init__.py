"""File readers/writers, one module per format, registered by extension."""

from medseg.data.readers.base import (
    BaseReader,
    file_extension,
    get_reader,
    read_volume,
    reader_names,
    register_reader,
    supported_extensions,
)
from medseg.data.readers.dicom import DicomReader
from medseg.data.readers.nifti import NiftiReader
from medseg.data.readers.npz import NpzReader
from medseg.data.readers.raster import PillowReader, TiffReader

__all__ = [
    "BaseReader", "DicomReader", "NiftiReader", "NpzReader", "PillowReader", "TiffReader", "file_extension",
    "get_reader", "read_volume", "reader_names", "register_reader", "supported_extensions",
]
