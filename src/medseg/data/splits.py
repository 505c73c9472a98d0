"""Seeded, leak-free, stratified splits, including the CMMC protocol.

Three rules make a split trustworthy:

* **Stable per dataset.** Each (modality, dataset) group draws from its own generator, seeded with a hash of
  ``(seed, modality, dataset)``; adding, removing or reordering other datasets never changes its split.
* **Grouped.** Cases that share a *group key* (two eyes of one child, neighbouring slices of one stack) always
  land on the same side. The key comes from the entry's ``group`` (a manifest column) or, when empty, from the
  dataset's *group rule* (:data:`DEFAULT_GROUP_RULES`, overridable per call):

  ========================  ======================================================================
  rule                      group key
  ========================  ======================================================================
  ``case``                  the case itself (independent images)
  ``regex:PATTERN``         the first capture group of ``PATTERN`` matched against the case id
                            (``regex:^(.*\\d+)[LR]$``: ``chase_01L`` and ``chase_01R`` → ``chase_01``)
  ``stack:N``               slices of one stack in natural case-id order, cut into contiguous blocks
                            of ``N``: a block is never split, so test slices come in runs, never
                            interleaved with training slices
  ``auto``                  ``regex`` with the left/right-eye pattern when every case id of the
                            dataset ends in ``<digits>L|R`` and some pair exists, else ``case``
  ========================  ======================================================================

* **Exact where possible.** Groups are visited in a seeded random order and taken while that brings the
  split's case count closer to its target (``round-half-up(n · fraction)``, at least one group when the
  fraction is positive); with one-case groups the counts are exact.

Split names: ``train``, ``val``, ``test`` and ``unused`` (kept out by a subset rule).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from medseg.data.catalog import CatalogEntry, with_split

DEFAULT_GROUP_RULES: dict[str, str] = {
    # CHASE_DB1: Image_<child><L|R> — both eyes of one child stay together
    "chasedb1": r"regex:^(.*?\d+)[LR]$",
    # ISBI 2012: one serial-section EM stack of 30 slices — contiguous blocks of 5 slices
    "isbi2012": "stack:5",
    # Duke DME: 110 B-scans = 10 subjects × 11 scans in file order (the fluid-free peripheral scans come in runs
    # across every 11th boundary: dme_009–013, 029–033, …) — one group per subject
    "dukedme": "stack:11",
    # TG3K: frames of thyroid ultrasound videos, ids in video order — runs of 20 neighbouring frames stay together
    # (the patient of each frame is not in the names; this removes near-duplicate neighbours, not every leak)
    "tg3k": "stack:20",
}
"""Group rule per dataset (key: dataset name lower-cased without punctuation); others use ``auto``."""

_EYE_PAIR = r"^(.*?\d+)[LR]$"


def dataset_key(name: str) -> str:
    """``CHASE_DB1`` / ``chase-db1`` → ``chasedb1`` (how :data:`DEFAULT_GROUP_RULES` is keyed)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _natural(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def stable_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``names`` (SHA-256, not Python's salted ``hash``)."""
    digest = hashlib.sha256("|".join([str(seed), *names]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def group_keys(case_ids: Sequence[str], rule: str) -> list[str]:
    """Group key of each case id under ``rule`` (see the module docstring).

    Raises:
        ValueError: unknown rule or a bad pattern/block size.
    """
    ids = list(case_ids)
    if rule == "auto":
        pat = re.compile(_EYE_PAIR)
        stems = [m.group(1) if (m := pat.match(c)) else None for c in ids]
        paired = stems and all(s is not None for s in stems) and len(set(stems)) < len(stems)
        return group_keys(ids, f"regex:{_EYE_PAIR}") if paired else list(ids)
    if rule == "case":
        return list(ids)
    if rule.startswith("regex:"):
        try:
            pat = re.compile(rule[len("regex:"):])
        except re.error as exc:
            raise ValueError(f"group rule {rule!r}: bad pattern ({exc})") from exc
        out = []
        for c in ids:
            m = pat.match(c)
            out.append(m.group(1) if m and m.groups() else c)
        return out
    if rule.startswith("stack:"):
        try:
            block = int(rule[len("stack:"):])
        except ValueError:
            block = 0
        if block < 1:
            raise ValueError(f"group rule {rule!r}: block size must be a positive integer")
        order = sorted(range(len(ids)), key=lambda i: _natural(ids[i]))
        out = [""] * len(ids)
        for rank, i in enumerate(order):
            out[i] = f"block{rank // block:03d}"
        return out
    raise ValueError(f"unknown group rule {rule!r}; use case, auto, regex:PATTERN or stack:N")


def assign_groups(entries: Iterable[CatalogEntry], rules: Mapping[str, str] | None = None) -> list[CatalogEntry]:
    """Fill empty ``group`` fields from each dataset's rule (``rules`` overrides :data:`DEFAULT_GROUP_RULES`,
    keyed by dataset name in any spelling); given groups are kept. Order is preserved."""
    table = {**DEFAULT_GROUP_RULES, **{dataset_key(k): v for k, v in (rules or {}).items()}}
    entries = list(entries)
    by_ds: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, e in enumerate(entries):
        if not e.group:
            by_ds[(e.modality, e.dataset)].append(i)
    out = list(entries)
    for (_, dataset), idx in by_ds.items():
        keys = group_keys([entries[i].case_id for i in idx], table.get(dataset_key(dataset), "auto"))
        for i, k in zip(idx, keys, strict=True):
            out[i] = replace(entries[i], group=k)
    return out


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


def _take(order: Sequence[str], sizes: Mapping[str, int], target: int, keep_free: int) -> list[str]:
    """Groups from ``order`` while they bring the case count closer to ``target`` (the first one always when
    ``target > 0``); ``keep_free`` groups are always left over."""
    chosen: list[str] = []
    total = 0
    limit = len(order) - keep_free
    for g in order:
        if total >= target or len(chosen) >= limit:
            break
        new = total + sizes[g]
        if not chosen or abs(new - target) < abs(total - target):
            chosen.append(g)
            total = new
    return chosen


def cap_per_dataset(entries: Iterable[CatalogEntry], limit: int | None, seed: int) -> list[CatalogEntry]:
    """At most ``limit`` entries per (modality, dataset): a seeded sample of each, kept in catalogue order (the CPU
    scale of every experiment and of ``data.max_per_dataset``). ``limit`` ``None`` or 0: all entries."""
    entries = list(entries)
    if not limit:
        return entries
    rng = np.random.default_rng(seed)
    by: dict[tuple[str, str], list[CatalogEntry]] = {}
    for e in entries:
        by.setdefault((e.modality, e.dataset), []).append(e)
    return [g[i] for g in by.values() for i in sorted(rng.permutation(len(g))[:limit].tolist())]


def cap_split_parts(entries: Iterable[CatalogEntry], keep: Mapping[str, int], seed: int) -> list[CatalogEntry]:
    """At most ``keep[part]`` entries per (modality, dataset) of each split part (``train``/``val``/``test``; a
    part not named is kept whole): :func:`cap_per_dataset` of each part, in the input order. Capping after the split
    keeps every part a subset of the uncapped split's."""
    entries = list(entries)
    bad = sorted(set(keep) - {"train", "val", "test"})
    if bad or any(v < 1 for v in keep.values()):
        raise ValueError(f"keep: parts are train/val/test with a count ≥ 1, got {dict(keep)}")
    kept = {id(e) for part in {e.split for e in entries}
            for e in cap_per_dataset([e for e in entries if e.split == part], keep.get(part), seed)}
    return [e for e in entries if id(e) in kept]


def stratified_split(entries: Iterable[CatalogEntry], *, test: float = 0.2, val: float = 0.0,
                     seed: int = 0, group_rules: Mapping[str, str] | None = None) -> list[CatalogEntry]:
    """Split each (modality, dataset) group into train/val/test by the given fractions, never separating a
    group key (see the module docstring).

    Args:
        entries: catalog entries (their ``split`` is overwritten; empty ``group`` fields are filled).
        test, val: fractions of each dataset's cases (rounded half up, at least one group when > 0 and the
            dataset has two or more groups).
        seed: random seed (combined with the modality and dataset names).
        group_rules: dataset → group rule, overriding :data:`DEFAULT_GROUP_RULES`.

    Returns:
        Entries grouped by (modality, dataset), sorted by case id inside each.
    """
    if test < 0 or val < 0 or test + val >= 1:
        raise ValueError(f"need 0 ≤ test, val and test + val < 1, got test={test}, val={val}")
    out: list[CatalogEntry] = []
    for (modality, dataset), cases in _groups(assign_groups(entries, group_rules), ("modality", "dataset")).items():
        sizes: dict[str, int] = defaultdict(int)
        for e in cases:
            sizes[e.group] += 1
        names = sorted(sizes, key=_natural)
        rng = stable_rng(seed, modality, dataset, "split")
        order = [names[i] for i in rng.permutation(len(names))]
        n = len(cases)
        n_test = _count(n, test)
        test_groups = _take(order, sizes, n_test, keep_free=1 if len(names) > 1 else 0)
        rest = [g for g in order if g not in set(test_groups)]
        got = sum(sizes[g] for g in test_groups)
        n_val = _count(n - got, val / (1 - test)) if val > 0 else 0
        val_groups = _take(rest, sizes, n_val, keep_free=1 if len(rest) > 1 else len(rest))
        side = {**dict.fromkeys(test_groups, "test"), **dict.fromkeys(val_groups, "val")}
        out += [with_split(e, side.get(e.group, "train")) for e in cases]
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
               align_test: bool = True, seed: int = 2024,
               group_rules: Mapping[str, str] | None = None) -> list[CatalogEntry]:
    """The CMMC protocol (paper §4): an 80/20 train/test split per data set, a stratified ``train_fraction``
    subset of the training part, and test sets of equal size across modalities.

    Args:
        test: test fraction per (modality, dataset) (paper: 0.2); group keys are respected.
        train_fraction: share of each group's training part kept for training (paper: 0.1); the rest
            becomes ``unused``. At least one case per group is kept.
        align_test: cut every modality's test set to the smallest modality's, keeping the data-set mix
            (largest-remainder allocation); the rest becomes ``unused``.
        seed: random seed (CMMC code: 2024), combined with the dataset names as in :func:`stratified_split`.
        group_rules: see :func:`stratified_split`.
    """
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    first = stratified_split(entries, test=test, seed=seed, group_rules=group_rules)
    out: list[CatalogEntry] = []
    for (modality, dataset), group in _groups([e for e in first if e.split == "train"],
                                              ("modality", "dataset")).items():
        keep = max(1, math.floor(len(group) * train_fraction + 0.5))
        rng = stable_rng(seed, modality, dataset, "train-subset")
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
            rng = stable_rng(seed, g[0].modality, g[0].dataset, "align-test")
            chosen = set(rng.permutation(len(g))[:k].tolist())
            out += [with_split(e, "test" if i in chosen else "unused") for i, e in enumerate(g)]
    return out


def labelled_subset(entries: Iterable[CatalogEntry], fraction: float, seed: int) -> list[CatalogEntry]:
    """The labelled share of a training split for a few-label fine-tuning run (MedSASS's 1 % / 10 % / 100 %).

    Stratified by (modality, dataset): each dataset keeps ``round(fraction · n)`` of its ``n`` images, and at least
    one. Deterministic in ``seed`` (SHA-256, not Python's salted hash) and *nested*: for one seed the 1 % images are
    among the 10 % ones (each dataset's images are ranked once by a seeded permutation and the first ones taken), so
    curves over label fractions compare like with like.

    Args:
        entries: the training entries (their order does not matter).
        fraction: share in (0, 1].
        seed: the run's seed.

    Returns:
        The chosen entries, in the input's (modality, dataset, natural case) order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    by: dict[tuple[str, str], list[CatalogEntry]] = defaultdict(list)
    for e in entries:
        by[(e.modality, e.dataset)].append(e)
    out = []
    for (modality, dataset), group in sorted(by.items()):
        group = sorted(group, key=lambda e: _natural(e.case_id))
        order = stable_rng(seed, "labelled", modality, dataset).permutation(len(group))
        k = max(1, math.floor(len(group) * fraction + 0.5))
        out += [group[i] for i in sorted(order[:k].tolist())]
    return out
