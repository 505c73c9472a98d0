"""Modality names: one canonical spelling per modality, discovered from data, never a closed list.

``canonical_modality`` maps common spellings (``X-Ray``, ``CXR``, ``US``, ``MRI``…) to one name so that
``Dermoscopy`` and ``dermoscopy`` are the same modality; names it does not know pass through cleaned
(lower case, ``-``/spaces → ``_``). A component trained on a fixed set of modalities checks membership
with :func:`resolve_modality`, which raises :class:`~medseg.errors.UnknownModalityError`.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from medseg.errors import UnknownModalityError

#: Spellings seen in public data sets (CVPR24 prefixes, folder names) → canonical name.
ALIASES: dict[str, str] = {
    "xray": "xray", "x_ray": "xray", "cxr": "xray", "xr": "xray", "radiograph": "xray",
    "us": "ultrasound", "ultrasound": "ultrasound", "ultra": "ultrasound",
    "mr": "mr", "mri": "mr", "ct": "ct", "pet": "pet",
    "dermoscopy": "dermoscopy", "dermatoscopy": "dermoscopy", "dermoscopic": "dermoscopy",
    "fundus": "fundus", "retina": "fundus", "microscopy": "microscopy", "histology": "microscopy",
    "endoscopy": "endoscopy", "colonoscopy": "endoscopy", "oct": "oct",
    "mammography": "mammography", "mammo": "mammography", "mamm": "mammography",
}

#: Modalities medseg has synthetic phantoms or aliases for (informative, not a restriction).
KNOWN_MODALITIES: tuple[str, ...] = tuple(sorted(set(ALIASES.values())))


def canonical_modality(name: str) -> str:
    """Canonical modality name: aliases resolved, otherwise lower-case with ``_`` separators."""
    cleaned = re.sub(r"[\s\-]+", "_", name.strip().lower())
    if not cleaned:
        raise ValueError("empty modality name")
    return ALIASES.get(cleaned, cleaned)


def resolve_modality(name: str, known: Collection[str]) -> str:
    """Canonical name of ``name`` if it is in ``known`` (compared canonically), else raise
    :class:`UnknownModalityError` listing ``known``."""
    canon = canonical_modality(name)
    known_canon = {canonical_modality(k) for k in known}
    if canon not in known_canon:
        raise UnknownModalityError(name, sorted(known_canon))
    return canon
