"""Data layer: readers for real formats, the :class:`Sample` type, the catalog/manifest, splits,
synthetic phantoms and format conversion."""

from medseg.data.catalog import CatalogEntry, Problem, discover, read_manifest, target_name, write_manifest
from medseg.data.loading import expand_labels, file_stem, load_samples, read_mask
from medseg.data.modality import KNOWN_MODALITIES, canonical_modality, resolve_modality
from medseg.data.normalize import to_label_map, to_uint8_rgb
from medseg.data.readers import get_reader, read_volume, supported_extensions
from medseg.data.sample import ImageVolume, Sample
from medseg.data.scan import ScanReport, scan
from medseg.data.splits import cap_per_dataset, cap_split_parts, cmmc_split, labelled_subset, stratified_split
from medseg.data.synthetic import PHANTOMS, generate_dataset, phantom

__all__ = [
    "KNOWN_MODALITIES",
    "PHANTOMS",
    "CatalogEntry",
    "ImageVolume",
    "Problem",
    "Sample",
    "ScanReport",
    "canonical_modality",
    "cap_per_dataset",
    "cap_split_parts",
    "cmmc_split",
    "discover",
    "expand_labels",
    "file_stem",
    "generate_dataset",
    "get_reader",
    "labelled_subset",
    "load_samples",
    "phantom",
    "read_manifest",
    "read_mask",
    "read_volume",
    "resolve_modality",
    "scan",
    "stratified_split",
    "supported_extensions",
    "target_name",
    "to_label_map",
    "to_uint8_rgb",
    "write_manifest",
]
