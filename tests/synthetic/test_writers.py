"""Writers: DICOM re-read with plain pydicom gives the intended HU; NIfTI affines round trip."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest

from screening.geometry import PATIENT_POSITIONS, lps_to_ras
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.writers import DicomInfo, write_dicom_series, write_nifti

STORAGE = [  # (transfer syntax, padding HU, RescaleIntercept, expected PixelRepresentation)
    ("explicit", None, -1024.0, 0),  # Siemens-like: unsigned
    ("implicit", -3024.0, -1024.0, 1),  # GE-like: signed, padding stored as -2000
    ("rle", -2000.0, 0.0, 1),  # Toshiba-like
    ("j2k", None, 0.0, 1),
    ("jpegls", None, -1024.0, 0),
    ("jpegls", -2000.0, 0.0, 1),  # signed JPEG-LS: the bit pattern encoded as unsigned
]


def _read_series_lps(folder):
    """Independent reassembly: sort by position along the normal, flip to canonical LPS."""
    dss = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(normal @ np.array(d.ImagePositionPatient, dtype=float)))
    vol = np.stack(
        [
            d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            for d in dss
        ]
    )
    if row[0] < 0:
        vol = vol[:, :, ::-1]
    if col[1] < 0:
        vol = vol[:, ::-1, :]
    if normal[2] < 0:
        vol = vol[::-1]
    # LPS of canonical voxel (0, 0, 0): on the lowest slice, the pixel the flips bring to (0, 0).
    first = dss[0] if normal[2] > 0 else dss[-1]
    r0 = 0 if col[1] > 0 else first.Rows - 1
    c0 = 0 if row[0] > 0 else first.Columns - 1
    dy, dx = (float(v) for v in first.PixelSpacing)
    corner = np.array(first.ImagePositionPatient, dtype=float) + c0 * dx * row + r0 * dy * col
    return vol, dss, corner


@pytest.mark.parametrize("position", PATIENT_POSITIONS)
@pytest.mark.parametrize(("syntax", "padding", "intercept", "pixrep"), STORAGE)
def test_dicom_hu_exact_for_every_position_and_storage(
    tmp_path, position, syntax, padding, intercept, pixrep
):
    geom = ScanGeometry(
        shape=(12, 96, 96),
        spacing_mm=(5.0, 3.7, 3.7),
        z_bottom_mm=-120.0,
        patient_position=position,
        table_position_mm=(4.0, -160.0, -800.0),
    )
    ph = make_phantom(PhantomSpec(padding_hu=padding), geom, seed=21)
    paths = write_dicom_series(
        ph, tmp_path, DicomInfo(transfer_syntax=syntax, rescale_intercept=intercept)
    )
    assert len(paths) == 12
    vol, dss, corner = _read_series_lps(tmp_path)
    np.testing.assert_array_equal(vol, ph.hu.astype(np.float64))
    assert dss[0].PixelRepresentation == pixrep
    assert dss[0].PatientPosition == position
    np.testing.assert_allclose(corner, ph.origin_mm, atol=1e-3)
    if padding is not None:
        assert int(dss[0].PixelPaddingValue) == int(padding - intercept)
    # The liver is on the patient's right once the files are read back: low x in LPS.
    liver_cols = np.nonzero(ph.liver_mask)[2]
    assert liver_cols.mean() < vol.shape[2] / 2


def test_dicom_carries_fake_identifiers_and_covariates(tmp_path):
    ph = make_phantom(
        PhantomSpec(kvp=100.0),
        ScanGeometry(shape=(3, 32, 32), spacing_mm=(5.0, 11.0, 11.0), z_bottom_mm=-60.0),
        seed=1,
    )
    info = DicomInfo(
        patient_name="SYNTH^PATIENT0042",
        patient_id="SYNPID000042",
        contrast_agent="IOHEXOL 350",
        uid_seed="x",
    )
    write_dicom_series(ph, tmp_path, info)
    ds = pydicom.dcmread(next(tmp_path.glob("*.dcm")))
    assert str(ds.PatientName) == "SYNTH^PATIENT0042" and ds.PatientID == "SYNPID000042"
    assert ds.PatientBirthDate and ds.AccessionNumber and ds.InstitutionName
    assert float(ds.KVP) == 100.0 and ds.ContrastBolusAgent == "IOHEXOL 350"
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert ds.Modality == "CT"


@pytest.mark.parametrize("syntax", ["explicit", "rle", "j2k", "jpegls"])
def test_dicom_files_reproducible(tmp_path, syntax):
    # 64 x 64: OpenJPEG cannot encode tiles smaller than its resolution pyramid
    ph = make_phantom(
        PhantomSpec(),
        ScanGeometry(shape=(2, 64, 64), spacing_mm=(5.0, 5.0, 5.0), z_bottom_mm=-60.0),
        seed=1,
    )
    a = write_dicom_series(ph, tmp_path / "a", DicomInfo(uid_seed="s1", transfer_syntax=syntax))
    b = write_dicom_series(ph, tmp_path / "b", DicomInfo(uid_seed="s1", transfer_syntax=syntax))
    c = write_dicom_series(ph, tmp_path / "c", DicomInfo(uid_seed="s2"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert pydicom.dcmread(a[0]).SeriesInstanceUID != pydicom.dcmread(c[0]).SeriesInstanceUID


@pytest.mark.parametrize(
    "axcodes", [("R", "A", "S"), ("L", "P", "S"), ("L", "A", "I"), ("S", "R", "A")]
)
def test_nifti_affine_round_trip(tmp_path, small_phantom, axcodes):
    ph = small_phantom
    path = write_nifti(ph.hu, ph, tmp_path / "ct.nii.gz", axcodes)
    img = nib.load(path)
    assert nib.aff2axcodes(img.affine) == axcodes
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.int16
    # Every voxel sits at the same world position as in the phantom's canonical grid.
    canon = nib.as_closest_canonical(img)  # RAS+ array order
    ras_from_canonical_index = lps_to_ras(ph.affine_lps)
    k, j, i = 7, 40, 90
    world = ras_from_canonical_index @ [k, j, i, 1.0]
    ijk = np.rint(np.linalg.inv(canon.affine) @ world).astype(int)[:3]
    assert np.asanyarray(canon.dataobj)[tuple(ijk)] == ph.hu[k, j, i]
    back = np.asanyarray(canon.dataobj)[::-1, ::-1, :].transpose(2, 1, 0)  # RAS → LPS (z, y, x)
    np.testing.assert_array_equal(back, ph.hu)


def test_mask_nifti_aligns_with_dicom_geometry(tmp_path):
    geom = ScanGeometry.preset("small", patient_position="FFS", table_position_mm=(0, -120, -500))
    ph = make_phantom(PhantomSpec(), geom, seed=8)
    mask_path = write_nifti(
        ph.liver_mask.astype(np.uint8), ph, tmp_path / "liver.nii.gz", ("L", "A", "S")
    )
    img = nib.load(mask_path)
    idx = np.argwhere(np.asanyarray(img.dataobj) > 0).mean(axis=0)
    centroid_ras = (img.affine @ [*idx, 1.0])[:3]
    np.testing.assert_allclose(centroid_ras * [-1, -1, 1], ph.liver_centroid_mm, atol=1e-6)
