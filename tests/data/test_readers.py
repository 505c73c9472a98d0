import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medseg.data import get_reader, load_samples, read_mask, read_volume, supported_extensions
from medseg.data.readers import DicomReader


def make_dicom(path, pixels: np.ndarray, *, slope=1.0, intercept=0.0, window=None, photometric="MONOCHROME2",
               spacing=(0.5, 0.7)):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = "anon", "CT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelSpacing = list(spacing)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_registry_covers_formats():
    exts = supported_extensions()
    for e in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz", ".npz"):
        assert e in exts
    assert get_reader("x", "dicom").name == "dicom"


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_rgb_roundtrip(tmp_path, rng, ext):
    img = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    p = tmp_path / f"a{ext}"
    (tifffile.imwrite(p, img) if ext == ".tif" else Image.fromarray(img).save(p))
    s = load_samples(p, modality="Dermoscopy", dataset="d")[0]
    np.testing.assert_array_equal(s.image, img)
    assert s.modality == "dermoscopy" and s.case_id == "a" and s.mask is None


def test_sixteen_bit_png_and_tiff_are_rescaled(tmp_path):
    arr = np.array([[0, 1000], [2000, 4000]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", arr)
    for f in ("a.png", "a.tif"):
        vol = read_volume(tmp_path / f)
        assert vol.data.dtype == np.uint16 and vol.data.max() == 4000
        s = load_samples(tmp_path / f)[0]
        np.testing.assert_array_equal(s.image[..., 0], [[0, 64], [128, 255]])


def test_rgba_and_grey_and_palette(tmp_path, rng):
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_samples(tmp_path / "rgba.png")[0].image, rgba[..., :3])
    grey = rng.integers(0, 256, (6, 7), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.gif")
    s = load_samples(tmp_path / "g.gif")[0]
    assert s.image.shape == (6, 7, 3) and (s.image[..., 0] == s.image[..., 1]).all()
    jpg = tmp_path / "c.jpg"
    Image.fromarray(rgba[..., :3]).save(jpg, quality=95)
    assert load_samples(jpg)[0].image.shape == (6, 7, 3)


def test_dicom_rescale_window_and_monochrome1(tmp_path):
    px = np.array([[0, 100], [200, 300]], np.uint16)
    p = make_dicom(tmp_path / "a.dcm", px, slope=2.0, intercept=-100.0, window=(100, 200))
    vol = read_volume(p)
    np.testing.assert_allclose(vol.data[0, ..., 0], [[0, 100], [200, 200]])  # HU −100,100,300,500 clipped [0, 200]
    assert vol.spacing[1:] == (0.5, 0.7) and vol.meta["window"] == (100.0, 200.0)
    raw = DicomReader(window=None).read(p)
    np.testing.assert_allclose(raw.data[0, ..., 0], [[-100, 100], [300, 500]])
    inv = read_volume(make_dicom(tmp_path / "b.dcm", px, photometric="MONOCHROME1"))
    np.testing.assert_allclose(inv.data[0, ..., 0], [[300, 200], [100, 0]])
    s = load_samples(p)[0]
    assert s.spacing == (0.5, 0.7) and s.image[1, 1, 0] == 255


def test_dicom_multiframe_and_mask_writeback(tmp_path):
    px = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    p = make_dicom(tmp_path / "m.dcm", px)
    samples = load_samples(p)
    assert len(samples) == 3 and samples[2].case_id == "m_z002"
    reader = get_reader(p)
    src = reader.read(p)
    out = reader.write_mask(px > 30, tmp_path / "m_mask.dcm", src)
    back = pydicom.dcmread(out)
    assert back.PatientID == "anon" and back.NumberOfFrames == 3
    labels, _ = read_mask(out)
    np.testing.assert_array_equal(labels, px > 30)


def test_nifti_volume_slices_spacing_and_writeback(tmp_path, rng):
    vol = rng.normal(size=(6, 5, 4)).astype(np.float32)  # (x, y, z)
    img = nib.Nifti1Image(vol, np.diag([0.8, 0.9, 2.5, 1.0]))
    p = tmp_path / "v.nii.gz"
    nib.save(img, p)
    samples = load_samples(p, modality="MRI")
    assert len(samples) == 4 and samples[0].image.shape == (5, 6, 3)
    assert samples[0].spacing == pytest.approx((0.9, 0.8)) and samples[0].modality == "mr"
    reader = get_reader(p)
    src = reader.read(p)
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1, 2, 3] = 1
    out = reader.write_mask(mask, tmp_path / "v_mask.nii.gz", src)
    back = nib.load(out)
    assert back.shape == (6, 5, 4) and back.get_fdata()[3, 2, 1] == 1
    np.testing.assert_allclose(back.affine, img.affine)


def test_cvpr_npz_2d_and_3d(tmp_path, rng):
    imgs = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    gts = np.zeros((10, 12), np.uint8)
    gts[2:4, 2:5], gts[6:8, 6:9] = 1, 2
    np.savez(tmp_path / "2DBox_US_a.npz", imgs=imgs, gts=gts, boxes=np.array([[2, 2, 4, 3]]))
    s = load_samples(tmp_path / "2DBox_US_a.npz")[0]
    np.testing.assert_array_equal(s.image, imgs)
    assert s.mask.dtype == np.uint16 and set(np.unique(s.mask)) == {0, 1, 2}
    assert s.meta["boxes"].tolist() == [[2, 2, 4, 3]]
    vol = rng.integers(0, 256, (4, 10, 12), dtype=np.uint8)
    np.savez(tmp_path / "3DBox_CT_b.npz", imgs=vol, gts=(vol > 128).astype(np.uint8), spacing=np.array([0.7, 0.8, 3.0]))
    samples = load_samples(tmp_path / "3DBox_CT_b.npz")
    assert len(samples) == 4 and samples[1].spacing == (0.8, 0.7)  # (x, y, z) → array order
    assert read_volume(tmp_path / "3DBox_CT_b.npz").spacing == (3.0, 0.8, 0.7)
    reader = get_reader(tmp_path / "3DBox_CT_b.npz")
    out = reader.write_mask(vol > 128, tmp_path / "out.npz", reader.read(tmp_path / "3DBox_CT_b.npz"))
    with np.load(out) as f:
        assert f["segs"].dtype == np.uint16 and f["segs"].shape == (4, 10, 12)


@pytest.mark.parametrize("ext", [".png", ".tif", ".gif", ".bmp"])
def test_mask_writeback_raster(tmp_path, ext):
    m = np.zeros((5, 6), bool)
    m[1:3, 2:4] = True
    reader = get_reader(f"x{ext}")
    out = reader.write_mask(m, tmp_path / f"m{ext}")
    labels, _ = read_mask(out)
    np.testing.assert_array_equal(labels[0], m)


def test_jpeg_mask_is_written_lossless(tmp_path):
    out = get_reader("x.jpg").write_mask(np.eye(4, dtype=bool), tmp_path / "m.jpg")
    assert out == tmp_path / "m.png" and out.is_file()  # never a lossy mask


def test_label_maps_union_and_per_label(tmp_path):
    from medseg.data import expand_labels

    gts = np.zeros((6, 6), np.uint8)
    gts[0:2, 0:2], gts[4:6, 4:6] = 1, 3
    np.savez(tmp_path / "a.npz", imgs=np.zeros((6, 6, 3), np.uint8), gts=gts)
    samples = load_samples(tmp_path / "a.npz")
    (union,) = expand_labels(samples, "union")
    assert union.mask.dtype == bool and union.mask.sum() == 8
    per = expand_labels(samples, "per_label")
    assert [s.case_id for s in per] == ["a_l1", "a_l3"] and all(s.mask.sum() == 4 for s in per)
    assert per[1].meta["label"] == 3
    assert expand_labels(samples, "keep") is samples


def test_dicom_window_reaches_load_samples_and_parses_from_the_cli_form(tmp_path):
    from medseg.data.readers.base import parse_dicom_window
    from medseg.errors import MedsegError

    px = np.array([[0, 100], [200, 300]], np.uint16)
    p = make_dicom(tmp_path / "a.dcm", px, slope=2.0, intercept=-100.0, window=(100, 200))
    header = load_samples(p)[0].image[..., 0]  # HU −100, 100, 300, 500 clipped to [0, 200]
    none = load_samples(p, dicom_window=None)[0].image[..., 0]  # whole range
    own = load_samples(p, dicom_window=(300, 400))[0].image[..., 0]  # [100, 500]
    np.testing.assert_array_equal(header, [[0, 127], [255, 255]])
    np.testing.assert_array_equal(none, [[0, 85], [170, 255]])
    np.testing.assert_array_equal(own, [[0, 0], [127, 255]])
    assert parse_dicom_window("header") == "header" and parse_dicom_window("none") is None
    assert parse_dicom_window("40,400") == (40.0, 400.0)
    with pytest.raises(MedsegError, match="CENTER,WIDTH"):
        parse_dicom_window("soft tissue")


def test_volume_conversion_keeps_the_slice_spacing(tmp_path, rng):
    from medseg.data.convert import folder_to_npz

    vol = (rng.random((6, 5, 4)) * 100).astype(np.float32)
    ds = tmp_path / "src" / "mr" / "vols"
    (ds / "images").mkdir(parents=True)
    (ds / "masks").mkdir()
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.9, 2.5, 1.0])), ds / "images" / "v.nii.gz")
    nib.save(nib.Nifti1Image((vol > 50).astype(np.uint8), np.diag([0.8, 0.9, 2.5, 1.0])), ds / "masks" / "v.nii.gz")
    (out,) = folder_to_npz(tmp_path / "src", tmp_path / "npz")
    with np.load(out) as f:
        np.testing.assert_allclose(f["spacing"], [0.8, 0.9, 2.5])  # (x, y, z) as the CVPR24 files store it
