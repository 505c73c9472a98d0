"""The data catalog: discover image/mask pairs in a folder tree and keep them in a manifest CSV.

Folder layout (modalities and data sets are discovered, never listed in code)::

    <root>/<modality>/<dataset>/images/<case>.<ext>
    <root>/<modality>/<dataset>/masks/<case>[<suffix>].<ext>     # optional (unlabeled data)
    <root>/<modality>/<dataset>/<case>.npz                      # or self-contained CVPR24 npz files

Pairing is by :func:`~medseg.data.loading.case_key` (the file stem without a mask suffix such as ``_mask`` or
``_seg``, :data:`~medseg.data.loading.MASK_NAME_SUFFIXES`) — the one pairing rule of medseg. Images without
a mask, masks without an image and duplicate stems are reported as :class:`Problem` s, never silently
dropped. The manifest is a CSV with columns ``image, mask, modality, dataset, case_id, group, split``; paths
are stored relative to the manifest's folder (``group`` and ``split`` may be empty).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from medseg.data.loading import case_key, file_stem
from medseg.data.modality import canonical_modality
from medseg.data.readers import file_extension, supported_extensions
from medseg.errors import InvalidInputError
from medseg.utils.atomic import atomic_write_text

MANIFEST_COLUMNS: tuple[str, ...] = ("image", "mask", "modality", "dataset", "case_id", "group", "split")


@dataclass(frozen=True)
class CatalogEntry:
    """One image file with its optional mask file.

    ``group`` keys cases that must stay on one side of a split (two eyes of one child, neighbouring slices of
    one stack); empty = the dataset's default rule (:mod:`medseg.data.splits`).
    """

    image: Path
    mask: Path | None
    modality: str
    dataset: str
    case_id: str
    split: str = ""
    group: str = ""


@dataclass(frozen=True)
class Problem:
    """Something wrong with a file or folder. ``severity`` is ``error`` (unusable) or ``warning``."""

    path: str
    problem: str
    severity: str = "error"


def _files(folder: Path, problems: list[Problem] | None = None) -> list[Path]:
    """The files of ``folder`` (sorted, hidden ones left out). With ``problems``, what is there but cannot be a
    file to read is said: a broken symbolic link (its target missing, or a loop) and a folder named like an image."""
    out = []
    known = set(supported_extensions())
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file():
            out.append(p)
        elif problems is None:
            continue
        elif p.is_symlink():
            problems.append(Problem(str(p), "broken symbolic link (its target is missing, or the links loop)"))
        elif p.is_dir() and file_extension(p) in known:
            problems.append(Problem(str(p), "a folder named like an image file: not read", "warning"))
    return out


def discover(root: str | Path) -> tuple[list[CatalogEntry], list[Problem]]:
    """Find every image/mask pair under ``root``.

    Returns:
        (entries sorted by modality, dataset, case id; problems found on the way).
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(root, "data root is not a folder")
    known = set(supported_extensions())
    entries: list[CatalogEntry] = []
    problems: list[Problem] = []
    loose = [p for p in _files(root) if file_extension(p) in known]
    if loose:
        problems.append(Problem(str(root), f"{len(loose)} image file(s) directly in the data root are not read: a "
                                           "data root holds <modality>/<dataset>/images (and masks) folders or "
                                           "<modality>/<dataset>/*.npz"))
    for mod_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        modality = canonical_modality(mod_dir.name)
        loose = [p for p in _files(mod_dir) if file_extension(p) in known]
        if loose:
            problems.append(Problem(str(mod_dir), f"{len(loose)} image file(s) in a modality folder are not read: "
                                                  "put them in a dataset folder (<modality>/<dataset>/images)"))
        ds_dirs = sorted(p for p in mod_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not ds_dirs:
            problems.append(Problem(str(mod_dir), "modality folder has no dataset folders", "warning"))
        for ds_dir in ds_dirs:
            found = _discover_dataset(ds_dir, modality, known, problems)
            if not found:
                problems.append(Problem(str(ds_dir), "no images found (expected images/ and masks/ or *.npz)",
                                        "warning"))
            entries.extend(found)
    return entries, problems


def _discover_dataset(ds_dir: Path, modality: str, known: set[str], problems: list[Problem]) -> list[CatalogEntry]:
    dataset = ds_dir.name
    img_dir, mask_dir = ds_dir / "images", ds_dir / "masks"
    npz = [p for p in _files(ds_dir) if file_extension(p) == ".npz"]
    if not img_dir.is_dir():
        return [CatalogEntry(p, None, modality, dataset, file_stem(p)) for p in npz]
    if npz:
        problems.append(Problem(str(ds_dir), f"{len(npz)} *.npz file(s) ignored: this dataset folder has images/, "
                                             "which takes precedence (move the npz files to a dataset folder of "
                                             "their own)", "warning"))

    def usable(files: list[Path], where: Path, key: Callable[[Path], str]) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for f in files:
            if file_extension(f) not in known:
                problems.append(Problem(str(f), f"unsupported file type {file_extension(f) or '(none)'!r}",
                                        "warning"))
                continue
            stem = key(f)
            if stem in out:
                problems.append(Problem(str(f), f"duplicate case {stem!r} (also {out[stem].name}) in {where}"))
                continue
            out[stem] = f
        return out

    images = usable(_files(img_dir, problems), img_dir, file_stem)
    masks = usable(_files(mask_dir, problems), mask_dir, case_key) if mask_dir.is_dir() else {}
    entries: list[CatalogEntry] = []
    used: set[str] = set()
    for stem, img in images.items():
        mask = masks.get(case_key(img))
        if mask is None and masks:
            problems.append(Problem(str(img), "image has no mask (orphan image)", "warning"))
        if mask is not None:
            used.add(case_key(img))
        entries.append(CatalogEntry(img, mask, modality, dataset, stem))
    for stem, m in masks.items():
        if stem not in used:
            problems.append(Problem(str(m), "mask has no image (orphan mask)", "warning"))
    return entries


def target_name(dataset: str, target_of: Mapping[str, str]) -> str:
    """The target of a dataset — what its masks delineate, and the *task* a task model segments it as: its entry in
    ``target_of`` (datasets of one target share it, e.g. DRIVE and CHASE_DB1 → ``retinal-vessel``), else the
    dataset's own name. (A CMMC *subset* is ``<modality>-<target>``.)"""
    return target_of.get(dataset, dataset)


def write_manifest(entries: Iterable[CatalogEntry], path: str | Path) -> Path:
    """Write entries as a manifest CSV (atomically); paths relative to the manifest's folder."""
    path = Path(path)
    base = path.parent.resolve()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for e in entries:
        w.writerow([_rel(e.image, base), "" if e.mask is None else _rel(e.mask, base), e.modality, e.dataset,
                    e.case_id, e.group, e.split])
    atomic_write_text(path, buf.getvalue())
    return path


def _rel(p: Path, base: Path) -> str:
    full = p.resolve()
    try:
        return full.relative_to(base).as_posix()
    except ValueError:
        return Path(os.path.relpath(full, base)).as_posix()


def read_manifest(path: str | Path) -> list[CatalogEntry]:
    """Read a manifest CSV; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, "manifest not found")
    base = path.parent
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("image", "modality", "dataset") if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInputError(path, f"manifest lacks column(s) {', '.join(missing)}")
        out = []
        for line, row in enumerate(reader, start=2):
            if not row.get("image"):
                raise InvalidInputError(path, f"line {line}: empty 'image'")
            img = base / row["image"]
            mask = base / row["mask"] if row.get("mask") else None
            out.append(CatalogEntry(img, mask, canonical_modality(row["modality"] or "unknown"),
                                    row["dataset"] or "unknown", row.get("case_id") or file_stem(img),
                                    row.get("split") or "", row.get("group") or ""))
    return out


def with_split(entry: CatalogEntry, split: str) -> CatalogEntry:
    return replace(entry, split=split)
