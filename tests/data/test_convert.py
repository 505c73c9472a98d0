import numpy as np

from medseg.data import discover, generate_dataset, load_samples
from medseg.data.convert import folder_to_npz, npz_to_folder, resize_longest


def test_folder_npz_folder_roundtrip(tmp_path):
    generate_dataset(tmp_path / "src", per_modality=2, size=64, modalities=("dermoscopy", "microscopy"))
    written = folder_to_npz(tmp_path / "src", tmp_path / "npz")
    assert len(written) == 4
    with np.load(written[0]) as f:
        assert f["imgs"].shape == (64, 64, 3) and f["gts"].dtype == np.uint8
    npz_to_folder(tmp_path / "npz", tmp_path / "back")
    a, _ = discover(tmp_path / "src")
    b, problems = discover(tmp_path / "back")
    assert not problems and len(a) == len(b)
    for ea, eb in zip(a, b, strict=True):
        sa = load_samples(ea.image, ea.mask)[0]
        sb = load_samples(eb.image, eb.mask)[0]
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.mask, sb.mask)


def test_resizing_longest_side(tmp_path, rng):
    img = rng.integers(0, 256, (100, 50, 3), dtype=np.uint8)
    mask = np.zeros((100, 50), bool)
    mask[10:60, 10:30] = True
    i2, m2 = resize_longest(img, mask, 40)
    assert i2.shape == (40, 20, 3) and m2.shape == (40, 20) and m2.dtype == bool
    assert set(np.unique(m2)) == {False, True}
    i3, m3 = resize_longest(img, mask, 200)
    assert i3 is img and m3 is mask
    generate_dataset(tmp_path / "src", per_modality=1, size=64, modalities=("xray",))
    (p,) = folder_to_npz(tmp_path / "src", tmp_path / "npz", max_size=32)
    with np.load(p) as f:
        assert f["imgs"].shape == (32, 32, 3)
