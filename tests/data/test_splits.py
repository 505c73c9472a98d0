"""Leak-free, stable splits: per-dataset seeding and group keys."""

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from medseg.data import CatalogEntry, read_manifest, stratified_split, write_manifest
from medseg.data.splits import assign_groups, cmmc_split, group_keys


def _ds(modality: str, dataset: str, ids: list[str]) -> list[CatalogEntry]:
    return [CatalogEntry(Path(f"{modality}/{dataset}/{c}.png"), Path(f"{modality}/{dataset}/m_{c}.png"), modality,
                         dataset, c) for c in ids]


CHASE = _ds("fundus", "chasedb1", [f"chase_{i:02d}{s}" for i in range(1, 15) for s in "LR"])
ISBI = _ds("microscopy", "isbi2012", [f"isbi_{i:02d}" for i in range(30)])
DRIVE = _ds("fundus", "drive", [f"drive_{i:02d}" for i in range(1, 41)])
PH2 = _ds("dermoscopy", "ph2", [f"ph2_{i:03d}" for i in range(200)])


def _splits(entries):
    return {(e.dataset, e.case_id): e.split for e in entries}


def test_adding_or_removing_a_dataset_changes_no_other_split():
    full = _splits(stratified_split(CHASE + ISBI + DRIVE + PH2, test=0.2, val=0.1, seed=0))
    without_chase = _splits(stratified_split(ISBI + DRIVE + PH2, test=0.2, val=0.1, seed=0))
    assert without_chase == {k: v for k, v in full.items() if k[0] != "chasedb1"}
    extra = _ds("xray", "new", [f"x{i}" for i in range(50)])
    with_extra = _splits(stratified_split(extra + PH2 + DRIVE + ISBI + CHASE, test=0.2, val=0.1, seed=0))
    assert {k: v for k, v in with_extra.items() if k[0] != "new"} == full


def test_no_group_on_two_sides():
    for seed in range(10):
        split = stratified_split(CHASE + ISBI + DRIVE, test=0.2, val=0.1, seed=seed)
        sides = defaultdict(set)
        for e in split:
            sides[(e.dataset, e.group)].add(e.split)
        assert all(len(s) == 1 for s in sides.values())
        chase = [e for e in split if e.dataset == "chasedb1"]
        assert Counter(e.split for e in chase)["test"] == 6  # 3 children, both eyes


def test_chase_pairs_stay_together_and_stack_blocks_are_contiguous():
    grouped = assign_groups(CHASE + ISBI)
    assert {e.group for e in grouped if e.case_id.startswith("chase_01")} == {"chase_01"}
    split = stratified_split(ISBI, test=0.2, seed=3)
    test_idx = sorted(int(e.case_id.split("_")[1]) for e in split if e.split == "test")
    assert len(test_idx) == 5 and test_idx == list(range(test_idx[0], test_idx[0] + 5))  # one contiguous run
    assert test_idx[0] % 5 == 0


def test_group_rules():
    assert group_keys(["a1L", "a1R", "a2L"], "auto") == ["a1", "a1", "a2"]
    assert group_keys(["a1L", "b"], "auto") == ["a1L", "b"]  # not every id is an eye: independent cases
    assert group_keys(["s2", "s10", "s1", "s3"], "stack:2") == ["block000", "block001", "block000", "block001"]
    assert group_keys(["p01_a", "p01_b", "p02_a"], r"regex:^(p\d+)_") == ["p01", "p01", "p02"]
    with pytest.raises(ValueError, match="unknown group rule"):
        group_keys(["a"], "banana")
    with pytest.raises(ValueError, match="positive"):
        group_keys(["a"], "stack:0")
    # a rule given per call overrides the default, in any spelling of the dataset name
    split = stratified_split(ISBI, test=0.2, seed=0, group_rules={"ISBI_2012": "case"})
    assert Counter(e.split for e in split)["test"] == 6


def test_manifest_groups_win_and_roundtrip(tmp_path):
    entries = [CatalogEntry(e.image, e.mask, e.modality, e.dataset, e.case_id, group=f"p{i // 10}")
               for i, e in enumerate(DRIVE)]
    split = stratified_split(entries, test=0.25, seed=1)
    assert Counter(e.split for e in split)["test"] == 10 and len({e.group for e in split if e.split == "test"}) == 1
    back = read_manifest(write_manifest(split, tmp_path / "m.csv"))
    assert [(e.group, e.split) for e in back] == [(e.group, e.split) for e in split]


def test_exact_counts_with_single_case_groups():
    c = Counter(e.split for e in stratified_split(PH2, test=0.2, val=0.1, seed=5))
    assert c == {"test": 40, "val": 20, "train": 140}


def test_cmmc_split_respects_groups():
    split = cmmc_split(CHASE + DRIVE + ISBI + PH2, seed=2024, align_test=False)
    sides = defaultdict(set)
    for e in split:
        sides[(e.dataset, e.group)].add("test" if e.split == "test" else "train-side")
    assert all(len(s) == 1 for s in sides.values())


def test_labelled_subsets_are_stratified_deterministic_and_nested() -> None:
    from medseg.data import CatalogEntry, labelled_subset

    entries = [CatalogEntry(Path(f"{d}/{i}.png"), None, "xray", d, f"c{i}") for d, n in (("a", 200), ("b", 30))
               for i in range(n)]
    one = labelled_subset(entries, 0.01, seed=0)
    ten = labelled_subset(entries, 0.10, seed=0)
    assert [sum(e.dataset == d for e in one) for d in "ab"] == [2, 1]  # at least one image per dataset
    assert [sum(e.dataset == d for e in ten) for d in "ab"] == [20, 3]
    assert set(one) <= set(ten)  # nested
    assert labelled_subset(list(reversed(entries)), 0.10, seed=0) == ten  # order-free, deterministic
    assert labelled_subset(entries, 0.10, seed=1) != ten
    assert labelled_subset(entries, 1.0, seed=3) == sorted(entries, key=lambda e: (e.dataset, int(e.case_id[1:])))
    with pytest.raises(ValueError, match="fraction"):
        labelled_subset(entries, 0.0, seed=0)


def test_cap_per_dataset_is_one_seeded_sample_in_catalogue_order() -> None:
    from medseg.data import cap_per_dataset

    entries = _ds("x", "a", [f"a{i}" for i in range(10)]) + _ds("x", "b", ["b0", "b1", "b2"])
    capped = cap_per_dataset(entries, 4, seed=0)
    assert [sum(e.dataset == d for e in capped) for d in ("a", "b")] == [4, 3]
    assert capped == cap_per_dataset(entries, 4, seed=0) != cap_per_dataset(entries, 4, seed=1)
    assert [entries.index(e) for e in capped] == sorted(entries.index(e) for e in capped)
    assert cap_per_dataset(entries, None, seed=0) == entries


def test_capping_after_the_split_keeps_each_part_a_subset_of_the_uncapped_one() -> None:
    from medseg.data import cap_split_parts

    entries = [CatalogEntry(Path(f"{d}{i}.png"), None, m, d, f"{d}{i:03d}")
               for m, d, n in (("xray", "a", 40), ("oct", "b", 13)) for i in range(n)]
    split = stratified_split(entries, test=0.2, val=0.1, seed=3)
    capped = cap_split_parts(split, {"train": 5, "test": 2}, seed=3)
    key = {(e.dataset, e.case_id): e.split for e in split}
    assert all(key[(e.dataset, e.case_id)] == e.split for e in capped)  # nobody changes part
    counts = Counter((e.dataset, e.split) for e in capped)
    assert counts[("a", "train")] == 5 and counts[("a", "test")] == 2 and counts[("b", "test")] <= 2
    assert counts[("a", "val")] == sum(e.split == "val" and e.dataset == "a" for e in split)  # not named: all kept
    assert capped == cap_split_parts(split, {"train": 5, "test": 2}, seed=3)  # seeded
    order = [(e.dataset, e.case_id) for e in split]
    assert [(e.dataset, e.case_id) for e in capped] == [k for k in order if k in {(e.dataset, e.case_id)
                                                                                    for e in capped}]
    with pytest.raises(ValueError, match="keep"):
        cap_split_parts(split, {"holdout": 3}, seed=0)
