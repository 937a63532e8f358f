"""DICOM and NIfTI readers on synthetic phantoms with known truth: HU, geometry, orientation."""

from __future__ import annotations

import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from screening.errors import DicomReadError, InputError, ValidationError
from screening.ingest.dicom import (
    DicomHeader,
    FileProblem,
    classify,
    read_dicom_series,
    read_header,
)
from screening.ingest.masks import mask_to_grid
from screening.ingest.nifti import read_nifti_ct, read_nifti_labels
from screening.ingest.validate import ValidationConfig
from screening.reasons import ReasonCode
from screening.store.scan import ct_sha256
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.phantom import Phantom
from screening.synthetic.writers import DicomInfo, write_dicom_series, write_nifti

CFG = ValidationConfig(min_slices=8)


def _phantom(position: str = "HFS", padding: float | None = -2000.0) -> Phantom:
    geom = ScanGeometry.preset("small", patient_position=position)
    return make_phantom(PhantomSpec(padding_hu=padding), geom, seed=5)


def _expected(ph: Phantom) -> np.ndarray:
    return np.maximum(ph.hu, -1024).astype(np.int16)


def _headers(folder: Path) -> tuple[list[DicomHeader], list[str]]:
    headers = []
    for p in sorted(folder.iterdir()):
        h = read_header(str(p))
        assert isinstance(h, DicomHeader)
        headers.append(h)
    return headers, [Path(h.path).name for h in headers]


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
@pytest.mark.parametrize("syntax", ["explicit", "rle", "jpegls"])
def test_dicom_series_is_canonical_and_exact(tmp_path: Path, position: str, syntax: str) -> None:
    ph = _phantom(position)
    write_dicom_series(ph, tmp_path, DicomInfo(transfer_syntax=syntax, uid_seed=position))
    headers, _ = _headers(tmp_path)
    random.Random(1).shuffle(headers)  # file order must not matter
    volume, first = read_dicom_series(headers, [Path(h.path).name for h in headers], CFG)
    np.testing.assert_array_equal(volume.ct_hu, _expected(ph))
    # The digest taken slice by slice while reading is the whole volume's, in any orientation.
    assert volume.ct_sha256 == ct_sha256(_expected(ph))
    assert volume.spacing_mm == pytest.approx(ph.spacing_mm)
    assert volume.origin_mm == pytest.approx(ph.origin_mm, abs=1e-3)
    assert volume.source["padding_voxels"] > 0  # the scan circle padding was recognised
    assert volume.ct_hu.min() >= -1024
    assert first.PatientPosition == position


def test_decoder_preference_names_plugins_pydicom_has() -> None:
    """Every plugin in the preference table is one pydicom knows for that syntax, and the
    chosen one is installed (gdcm comes with the package; JPEG-LS must get it)."""
    from pydicom.pixels import get_decoder

    from screening.ingest.dicom import DECODER_PREFERENCE, preferred_decoder

    for ts, plugins in DECODER_PREFERENCE.items():
        decoder = get_decoder(ts)
        known = set(decoder._available) | set(decoder._unavailable)
        assert set(plugins) <= known, (ts, set(plugins) - known)
        assert preferred_decoder(ts) in decoder.available_plugins
    assert preferred_decoder("1.2.840.10008.1.2.4.80") == "gdcm"
    assert preferred_decoder("1.2.840.10008.1.2.1") is None  # uncompressed: no plugin


def test_a_failing_preferred_decoder_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preferred plugin failing (here: Pillow, which cannot read JPEG-LS) costs time, not
    the scan: pydicom's own order decodes it, with the same pixels."""
    import screening.ingest.dicom as dicom

    ph = _phantom()
    write_dicom_series(ph, tmp_path, DicomInfo(transfer_syntax="jpegls"))
    headers, names = _headers(tmp_path)
    monkeypatch.setattr(dicom, "preferred_decoder", lambda ts: "pillow")
    volume, _ = read_dicom_series(headers, names, CFG)
    np.testing.assert_array_equal(volume.ct_hu, _expected(ph))


def test_missing_intercept_is_a_clear_error(tmp_path: Path) -> None:
    ph = _phantom()
    paths = write_dicom_series(ph, tmp_path, DicomInfo())
    ds = pydicom.dcmread(paths[3])
    del ds.RescaleIntercept
    ds.save_as(paths[3])
    headers, names = _headers(tmp_path)
    with pytest.raises(DicomReadError) as err:
        read_dicom_series(headers, names, CFG)
    assert err.value.reason is ReasonCode.RESCALE_INCOMPLETE
    assert paths[3].name in err.value.message and "RescaleSlope" in err.value.message


@pytest.mark.parametrize("slope", ["0", "-1"])
def test_a_zero_or_negative_rescale_slope_on_one_slice_is_refused(
    tmp_path: Path, slope: str
) -> None:
    """Slope 0 on one slice used to turn that slice into -1024 HU with status ok."""
    paths = write_dicom_series(_phantom(), tmp_path, DicomInfo())
    ds = pydicom.dcmread(paths[4])
    ds.RescaleSlope = slope
    ds.save_as(paths[4])
    headers, names = _headers(tmp_path)
    with pytest.raises(DicomReadError) as err:
        read_dicom_series(headers, names, CFG)
    assert err.value.reason is ReasonCode.RESCALE_INVALID
    assert paths[4].name in err.value.message and f"RescaleSlope {slope}" in err.value.message


def test_truncated_slice_is_pixeldata_short(tmp_path: Path) -> None:
    paths = write_dicom_series(_phantom(), tmp_path, DicomInfo())
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[: len(data) - 5000])
    headers, names = _headers(tmp_path)
    with pytest.raises(DicomReadError) as err:
        read_dicom_series(headers, names, CFG)
    assert err.value.reason is ReasonCode.PIXELDATA_SHORT
    assert err.value.path == str(paths[5])


def test_headers_classify_junk_no_pixels_and_localizers(tmp_path: Path) -> None:
    paths = write_dicom_series(_phantom(), tmp_path / "s", DicomInfo())
    junk = tmp_path / "notes.txt"
    junk.write_text("not dicom")
    problem = read_header(str(junk))
    assert isinstance(problem, FileProblem) and problem.reason is ReasonCode.NO_DICM
    ds = pydicom.dcmread(paths[0])
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    h = read_header(str(tmp_path / "nopix.dcm"))
    assert isinstance(h, DicomHeader) and not h.has_pixels
    assert classify(h) is not None and classify(h)[0] is ReasonCode.NON_IMAGING  # type: ignore[index]
    ds = pydicom.dcmread(paths[1])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(tmp_path / "scout.dcm")
    h = read_header(str(tmp_path / "scout.dcm"))
    assert isinstance(h, DicomHeader) and classify(h)[0] is ReasonCode.LOCALIZER  # type: ignore[index]
    ds.ImageType = ["ORIGINAL", "SECONDARY", "AXIAL"]  # retrospective recon: kept
    ds.save_as(tmp_path / "retro.dcm")
    h = read_header(str(tmp_path / "retro.dcm"))
    assert isinstance(h, DicomHeader) and classify(h) is None
    for bad in (["0", "0.7"], ["0.7", "-0.7"]):  # would give zero / negative volumes and mm
        ds.PixelSpacing = bad
        ds.save_as(tmp_path / "spacing.dcm")
        h = read_header(str(tmp_path / "spacing.dcm"))
        assert isinstance(h, DicomHeader)
        assert classify(h)[0] is ReasonCode.PIXEL_SPACING_INVALID  # type: ignore[index]
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.Modality = "MR"
    ds.save_as(tmp_path / "mr.dcm")
    h = read_header(str(tmp_path / "mr.dcm"))
    assert isinstance(h, DicomHeader) and classify(h)[0] is ReasonCode.NOT_CT  # type: ignore[index]


def test_size_limit_before_reading_pixels(tmp_path: Path) -> None:
    write_dicom_series(_phantom(), tmp_path, DicomInfo())
    headers, names = _headers(tmp_path)
    with pytest.raises(ValidationError) as err:
        read_dicom_series(headers, names, ValidationConfig(min_slices=8, max_voxels=1000))
    assert err.value.reason is ReasonCode.SIZE_LIMIT


@pytest.mark.parametrize(
    "axcodes", [("R", "A", "S"), ("L", "P", "S"), ("L", "A", "I"), ("S", "R", "P")]
)
def test_nifti_any_orientation_lands_canonical(tmp_path: Path, axcodes: tuple[str, ...]) -> None:
    ph = _phantom(padding=None)
    path = write_nifti(ph.hu, ph, tmp_path / "ct.nii.gz", axcodes=axcodes)
    volume = read_nifti_ct(str(path), max_voxels=10**9)
    np.testing.assert_array_equal(volume.ct_hu, _expected(ph))
    assert volume.spacing_mm == pytest.approx(ph.spacing_mm)
    assert volume.origin_mm == pytest.approx(ph.origin_mm, abs=1e-3)


def test_nifti_scaling_applied_in_float(tmp_path: Path) -> None:
    data = np.full((4, 5, 6), 100, dtype=np.int16)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "s.nii")
    volume = read_nifti_ct(str(tmp_path / "s.nii"), max_voxels=10**6)
    assert np.all(volume.ct_hu == -824)


def test_nifti_huge_header_is_size_limit_without_allocation(tmp_path: Path) -> None:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))  # 2.7e13 voxels: would be 54 TB
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(np.eye(4), code=1)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as f:
        f.write(hdr.binaryblock + b"\x00" * 4 + b"\x00" * 100)  # tiny file, huge claim
    with pytest.raises(ValidationError) as err:
        read_nifti_ct(str(path), max_voxels=10**9)
    assert err.value.reason is ReasonCode.SIZE_LIMIT
    assert "nothing was read" in err.value.message


def test_nifti_mask_rejected_as_ct_and_junk_unreadable(tmp_path: Path) -> None:
    ph = _phantom(padding=None)
    path = write_nifti(ph.liver_mask.astype(np.uint8), ph, tmp_path / "liver.nii.gz")
    with pytest.raises(ValidationError) as err:
        read_nifti_ct(str(path), max_voxels=10**9)
    assert err.value.reason is ReasonCode.NOT_CT
    (tmp_path / "junk.nii.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(InputError) as err2:
        read_nifti_ct(str(tmp_path / "junk.nii.gz"), max_voxels=10**9)
    assert err2.value.reason is ReasonCode.UNREADABLE_FILE


def test_mask_on_other_grid_is_resampled_nearest(tmp_path: Path) -> None:
    ph = _phantom(padding=None)
    # The mask stored flipped (LAS) is the same grid: no resampling.
    path = write_nifti(ph.liver_mask.astype(np.uint8), ph, tmp_path / "m.nii.gz", ("L", "A", "S"))
    mask, grid = read_nifti_labels(str(path), None, 10**9)
    same = mask_to_grid(mask, grid.spacing_mm, grid.origin_mm, ph.hu.shape, ph.spacing_mm,
                        ph.origin_mm)  # fmt: skip
    assert not same.resampled
    np.testing.assert_array_equal(same.mask, ph.liver_mask)
    # Every other slice: a coarser z grid must come back by nearest neighbour.
    coarse = mask[::2]
    spacing = (grid.spacing_mm[0] * 2, grid.spacing_mm[1], grid.spacing_mm[2])
    back = mask_to_grid(coarse, spacing, grid.origin_mm, ph.hu.shape, ph.spacing_mm, ph.origin_mm)
    assert back.resampled
    np.testing.assert_array_equal(back.mask[::2], ph.liver_mask[::2])
    assert set(np.unique(back.mask)) <= {False, True}
    far = (grid.origin_mm[0] + 5000.0, grid.origin_mm[1], grid.origin_mm[2])
    with pytest.raises(ValidationError) as err:
        mask_to_grid(mask, grid.spacing_mm, far, ph.hu.shape, ph.spacing_mm, ph.origin_mm)
    assert err.value.reason is ReasonCode.MASK_GRID_MISMATCH


@pytest.mark.parametrize(
    ("agent", "route", "expected"),
    [
        (None, None, False),
        ("NONE", None, False),
        ("IOHEXOL 350", "IV", True),
        ("APPLIED", None, True),
        ("", "Oral & IV", True),
        ("BARIUM", "ORAL POSITIVE", False),  # "POSITIVE" contains "IV" but is not a route
        ("GASTROGRAFIN", "ORAL", False),
        ("OMNIPAQUE", "INTRAVENOUS", True),
    ],
)
def test_contrast_header_counts_intravascular_only(
    agent: str | None, route: str | None, expected: bool
) -> None:
    from pydicom.dataset import Dataset

    from screening.ingest.dicom import contrast_in_header

    ds = Dataset()
    if agent is not None:
        ds.ContrastBolusAgent = agent
    if route is not None:
        ds.ContrastBolusRoute = route
    assert contrast_in_header(ds) is expected


@pytest.mark.parametrize("syntax", ["explicit", "implicit"])
@pytest.mark.parametrize("position", ["HFS", "FFP"])  # read in place / through a flipped view
def test_direct_pixel_read_equals_pydicom_decode(
    tmp_path: Path, syntax: str, position: str
) -> None:
    import dataclasses

    ph = _phantom(position)
    write_dicom_series(ph, tmp_path, DicomInfo(transfer_syntax=syntax))
    headers, names = _headers(tmp_path)
    assert all(h.raw_pixels is not None for h in headers)  # the fast path is taken
    fast, _ = read_dicom_series(headers, names, CFG)
    slow_headers = [dataclasses.replace(h, raw_pixels=None) for h in headers]
    slow, _ = read_dicom_series(slow_headers, names, CFG)
    np.testing.assert_array_equal(fast.ct_hu, slow.ct_hu)
    assert fast.source == slow.source
    assert fast.ct_sha256 == slow.ct_sha256 == ct_sha256(slow.ct_hu)


def test_direct_read_masks_bits_above_bits_stored(tmp_path: Path) -> None:
    ph = _phantom()
    paths = write_dicom_series(ph, tmp_path, DicomInfo())
    for p in paths:  # 12-bit signed data whose unused top bits hold garbage
        ds = pydicom.dcmread(p)
        hu = ds.pixel_array.astype(np.int32) - 1024  # stored = HU + 1024 -> make signed HU
        stored = np.clip(hu, -2048, 2047).astype(np.int16)
        garbage = (stored.view(np.uint16) & 0x0FFF) | 0xA000
        ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 12, 11
        ds.RescaleIntercept = "0"
        ds.PixelData = garbage.astype(np.uint16).tobytes()
        del ds.PixelPaddingValue
        ds.save_as(p)
    headers, names = _headers(tmp_path)
    volume, _ = read_dicom_series(headers, names, CFG)
    expected = np.clip(np.maximum(ph.hu.astype(np.int32), -1024), -2048, 2047)
    np.testing.assert_array_equal(volume.ct_hu, expected)


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "rle"])
def test_header_values_decoded_raw_equal_pydicom(
    tmp_path: Path, syntax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discovery decodes its ~20 header values from the raw bytes instead of through pydicom's
    conversion; on unusual and invalid encodings the header is still exactly pydicom's."""
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    paths = write_dicom_series(_phantom(), tmp_path, DicomInfo(transfer_syntax=syntax))
    odd: list[dict[str, str | list[str] | int]] = [
        {},  # as written
        {"ImagePositionPatient": [" -1.5E+2", "2.25 ", "  3"], "PixelSpacing": ["0.7", "0.7 "]},
        {"RescaleSlope": " 1.0 ", "RescaleIntercept": "-1024.000"},  # padded, trailing zeros
        {"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL", ""], "Modality": "ct"},  # empty value
        {"NumberOfFrames": "1", "SeriesInstanceUID": "1.2.3\\4.5.6"},  # two UIDs: pydicom's
        {"ImageOrientationPatient": "1", "FrameOfReferenceUID": ""},  # wrong VM, empty
        {"NumberOfFrames": " 2 ", "StudyInstanceUID": "1.2.840.99\0"},  # padded IS, trailing NUL
        {"ImagePositionPatient": ["1", "9", "3"]},  # made "1\\x\\3" below: pydicom decides
        {"Rows": 0, "PixelSpacing": "0.5\\0.5\\0.5"},
    ]
    for path, changes in zip(paths, odd, strict=False):
        ds = pydicom.dcmread(path)
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
        if changes.get("ImagePositionPatient") == ["1", "9", "3"]:
            data = Path(path).read_bytes()
            Path(path).write_bytes(data.replace(b"1\\9\\3", b"1\\x\\3", 1))
    compared = 0
    for path in paths:
        fast, slow = read_header(str(path)), read_header(str(path), raw_values=False)
        assert fast == slow, (path, fast, slow)
        compared += isinstance(fast, DicomHeader)
    assert compared >= len(odd) - 1


def test_synth_made_images_are_recorded_as_synthetic_and_others_not(tmp_path: Path) -> None:
    """`screening synth` marks its images; ingest records it (the synthetic-only demo model
    is flagged on every scan without the mark)."""
    ph = _phantom()
    write_dicom_series(ph, tmp_path / "dcm", DicomInfo(uid_seed="mark"))
    headers, names = _headers(tmp_path / "dcm")
    assert read_dicom_series(headers, names, CFG)[0].source["synthetic"] is True
    for p in (tmp_path / "dcm").iterdir():  # the same series with the comment removed
        ds = pydicom.dcmread(p)
        del ds.ImageComments
        ds.save_as(p)
    headers, names = _headers(tmp_path / "dcm")
    assert read_dicom_series(headers, names, CFG)[0].source["synthetic"] is False
    nii = write_nifti(_expected(ph), ph, tmp_path / "ct.nii.gz")
    assert read_nifti_ct(str(nii), 10**9).source["synthetic"] is True
    img = nib.load(nii)
    img.header["descrip"] = b"a scanner"
    nib.save(img, tmp_path / "other.nii.gz")
    assert read_nifti_ct(str(tmp_path / "other.nii.gz"), 10**9).source["synthetic"] is False


def test_nifti_with_nan_voxels_is_rejected_not_read_as_zero_hu(tmp_path: Path) -> None:
    """NaN used to become 0 HU: the liver mean moved 14 HU and the steatosis call flipped."""
    ph = _phantom()
    data = _expected(ph).astype(np.float32)
    data[3, 10:20, 10:20] = np.nan
    data[4, 0, 0] = np.inf
    path = write_nifti(data, ph, tmp_path / "nan.nii.gz")
    with pytest.raises(ValidationError, match="101 voxel") as e:
        read_nifti_ct(str(path), 10**9)
    assert e.value.reason == ReasonCode.NON_FINITE_VALUES
    assert "nan.nii.gz" in str(e.value)
    clean = write_nifti(_expected(ph).astype(np.float32), ph, tmp_path / "ok.nii.gz")
    np.testing.assert_array_equal(read_nifti_ct(str(clean), 10**9).ct_hu, _expected(ph))
