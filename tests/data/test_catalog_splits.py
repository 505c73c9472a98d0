from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medseg.data import (
    CatalogEntry,
    cmmc_split,
    discover,
    generate_dataset,
    read_manifest,
    stratified_split,
    write_manifest,
)
from medseg.errors import InvalidInputError


def _entries(spec: dict[tuple[str, str], int]) -> list[CatalogEntry]:
    return [CatalogEntry(Path(f"{m}/{d}/{i}.png"), Path(f"{m}/{d}/m{i}.png"), m, d, f"{d}_{i:03d}")
            for (m, d), n in spec.items() for i in range(n)]


def test_discover_pairs_by_stem_with_suffix(tmp_path):
    generate_dataset(tmp_path, per_modality=3, size=32, modalities=("microscopy", "xray"))
    img = tmp_path / "xray" / "synthetic_lungs" / "masks" / "case_000.png"
    img.rename(img.with_name("case_000_mask.png"))
    entries, problems = discover(tmp_path)
    assert len(entries) == 6 and not problems
    assert {e.modality for e in entries} == {"microscopy", "xray"}
    assert entries[3].mask.name == "case_000_mask.png"


def test_manifest_roundtrip_relative_paths(tmp_path):
    generate_dataset(tmp_path / "d", per_modality=2, size=32, modalities=("fundus",))
    entries, _ = discover(tmp_path / "d")
    out = write_manifest(stratified_split(entries, test=0.5, seed=1), tmp_path / "m" / "manifest.csv")
    text = out.read_text()
    assert text.splitlines()[0] == "image,mask,modality,dataset,case_id,group,split"
    assert str(tmp_path) not in text  # relative
    back = read_manifest(out)
    assert [e.image.resolve() for e in back] == [e.image.resolve() for e in entries]
    assert Counter(e.split for e in back) == {"train": 1, "test": 1}


def test_manifest_errors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(InvalidInputError, match="lacks column"):
        read_manifest(p)
    p.write_text("image,modality,dataset\n,x,y\n")
    with pytest.raises(InvalidInputError, match="line 2"):
        read_manifest(p)


def test_stratified_split_is_seeded_and_stratified():
    entries = _entries({("a", "d1"): 10, ("a", "d2"): 5, ("b", "d3"): 20})
    s1 = stratified_split(entries, test=0.2, val=0.1, seed=3)
    s2 = stratified_split(list(reversed(entries)), test=0.2, val=0.1, seed=3)
    key = sorted((e.case_id, e.split) for e in s1)
    assert key == sorted((e.case_id, e.split) for e in s2)  # order of input does not matter
    c = Counter((e.dataset, e.split) for e in s1)
    assert c[("d1", "test")] == 2 and c[("d2", "test")] == 1 and c[("d3", "test")] == 4
    assert c[("d3", "val")] == 2
    assert key != sorted((e.case_id, e.split) for e in stratified_split(entries, test=0.2, val=0.1, seed=4))
    with pytest.raises(ValueError):
        stratified_split(entries, test=0.6, val=0.5)


def test_cmmc_protocol():
    entries = _entries({("derm", "ph2"): 200, ("fundus", "drive"): 40, ("fundus", "chase"): 28,
                        ("micro", "dsb"): 400, ("micro", "isbi"): 30})
    s = cmmc_split(entries, test=0.2, train_fraction=0.1, seed=2024)
    assert len(s) == len(entries)
    c = Counter((e.modality, e.split) for e in s)
    tests = {m: c[(m, "test")] for m in ("derm", "fundus", "micro")}
    assert len(set(tests.values())) == 1  # aligned across modalities
    assert tests["fundus"] == 8 + 6  # fundus is the smallest modality: all of its 20 % test cases
    byds = Counter((e.dataset, e.split) for e in s)
    assert byds[("ph2", "train")] == 16 and byds[("dsb", "train")] == 32 and byds[("drive", "train")] == 3
    assert byds[("dsb", "test")] + byds[("isbi", "test")] == 14 and byds[("isbi", "test")] >= 1
    again = cmmc_split(entries, seed=2024)
    assert [(e.case_id, e.split) for e in again] == [(e.case_id, e.split) for e in s]
    unaligned = Counter(e.split for e in cmmc_split(entries, align_test=False))
    assert unaligned["test"] == 40 + 8 + 6 + 80 + 6


def test_synthetic_is_deterministic_and_nonempty(tmp_path):
    from medseg.data import PHANTOMS, phantom

    for mod in PHANTOMS:
        a, ma = phantom(mod, seed=5, size=64)
        b, mb = phantom(mod, seed=5, size=64)
        assert a.dtype == np.uint8 and a.shape == (64, 64, 3) and ma.shape == (64, 64)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ma, mb)
        assert 0 < ma.mean() < 0.6, mod
    with pytest.raises(KeyError, match="no phantom"):
        phantom("thermography", 0)
