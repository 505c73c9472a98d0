"""Seeded, stratified splits, including the CMMC protocol.

Every function groups entries by (modality, dataset), sorts each group by case id and draws from one
``numpy.random.Generator(seed)`` in sorted group order, so a split depends only on the file list and the
seed. Split names: ``train``, ``val``, ``test`` and ``unused`` (kept out by a subset rule).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from medseg.data.catalog import CatalogEntry, with_split


def _groups(entries: Iterable[CatalogEntry], keys: Sequence[str]) -> dict[tuple, list[CatalogEntry]]:
    out: dict[tuple, list[CatalogEntry]] = defaultdict(list)
    for e in entries:
        out[tuple(getattr(e, k) for k in keys)].append(e)
    return {k: sorted(v, key=lambda e: e.case_id) for k, v in sorted(out.items())}


def _count(n: int, fraction: float) -> int:
    """Round-half-up share of ``n``; at least 1 when the fraction is positive and n ≥ 2."""
    if fraction <= 0 or n == 0:
        return 0
    k = math.floor(n * fraction + 0.5)
    return min(max(k, 1 if n >= 2 else 0), n - 1 if fraction < 1 else n)


def stratified_split(entries: Iterable[CatalogEntry], *, test: float = 0.2, val: float = 0.0,
                     seed: int = 0) -> list[CatalogEntry]:
    """Split each (modality, dataset) group into train/val/test by the given fractions.

    Args:
        entries: catalog entries (their ``split`` is overwritten).
        test, val: fractions of each group (rounded half up, at least one case when > 0 and the group has
            two or more).
        seed: random seed.
    """
    if test < 0 or val < 0 or test + val >= 1:
        raise ValueError(f"need 0 ≤ test, val and test + val < 1, got test={test}, val={val}")
    rng = np.random.default_rng(seed)
    out: list[CatalogEntry] = []
    for group in _groups(entries, ("modality", "dataset")).values():
        order = rng.permutation(len(group))
        n_test = _count(len(group), test)
        n_val = _count(len(group) - n_test, val / (1 - test)) if val > 0 else 0
        for rank, idx in enumerate(order):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            out.append(with_split(group[idx], split))
    return out


def _largest_remainder(total: int, sizes: list[int]) -> list[int]:
    """Distribute ``total`` over groups proportionally to ``sizes`` (never more than a group has)."""
    whole = sum(sizes)
    if whole == 0:
        return [0] * len(sizes)
    exact = [total * s / whole for s in sizes]
    alloc = [min(math.floor(x), s) for x, s in zip(exact, sizes, strict=True)]
    for i in sorted(range(len(sizes)), key=lambda i: exact[i] - alloc[i], reverse=True):
        if sum(alloc) >= total:
            break
        if alloc[i] < sizes[i]:
            alloc[i] += 1
    return alloc


def cmmc_split(entries: Iterable[CatalogEntry], *, test: float = 0.2, train_fraction: float = 0.1,
               align_test: bool = True, seed: int = 2024) -> list[CatalogEntry]:
    """The CMMC protocol (paper §4): an 80/20 train/test split per data set, a stratified ``train_fraction``
    subset of the training part, and test sets of equal size across modalities.

    Args:
        test: test fraction per (modality, dataset) (paper: 0.2).
        train_fraction: share of each group's training part kept for training (paper: 0.1); the rest
            becomes ``unused``. At least one case per group is kept.
        align_test: cut every modality's test set to the smallest modality's, keeping the data-set mix
            (largest-remainder allocation); the rest becomes ``unused``.
        seed: random seed (CMMC code: 2024).
    """
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    rng = np.random.default_rng(seed)
    first = stratified_split(entries, test=test, seed=seed)
    out: list[CatalogEntry] = []
    for group in _groups([e for e in first if e.split == "train"], ("modality", "dataset")).values():
        keep = max(1, math.floor(len(group) * train_fraction + 0.5))
        chosen = set(rng.permutation(len(group))[:keep].tolist())
        out += [with_split(e, "train" if i in chosen else "unused") for i, e in enumerate(group)]
    tests = [e for e in first if e.split == "test"]
    if not align_test:
        return out + tests
    by_mod = _groups(tests, ("modality",))
    target = min((len(v) for v in by_mod.values()), default=0)
    for mod_entries in by_mod.values():
        ds_groups = list(_groups(mod_entries, ("dataset",)).values())
        alloc = _largest_remainder(target, [len(g) for g in ds_groups])
        for g, k in zip(ds_groups, alloc, strict=True):
            chosen = set(rng.permutation(len(g))[:k].tolist())
            out += [with_split(e, "test" if i in chosen else "unused") for i, e in enumerate(g)]
    return out
