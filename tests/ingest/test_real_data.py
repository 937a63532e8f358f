"""Ingest on the real CT fixtures in ``../shared/data/real`` (skipped when the folder is absent).

What only real scans can show: every common compressed transfer syntax decodes to the reference
pixels, real series that a converter must refuse get the right reason codes, a full GE series and
a JPEG 2000 Siemens series come out exactly as an independent reader computes them, and external
masks (RAS and LAS NIfTI) land on the right voxels (checked by their HU, not only by geometry).

The expected values are derived in the tests from the files themselves (pydicom, nibabel) or taken
from the fixtures' README / SOURCE.txt, never from the library under test. Nothing is copied into
the repository: extractions and stores live under pytest's temporary folders.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import io
import logging
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import nibabel as nib
import numpy as np
import pydicom
import pytest
from distributed import LocalCluster
from numcodecs.zstd import Zstd
from numpy.typing import NDArray
from scipy import ndimage

from screening.ingest import (
    IngestConfig,
    PseudonymKey,
    ValidationConfig,
    ingest,
    read_dicom_series,
    read_header,
    read_manifest,
)
from screening.ingest.dicom import DicomHeader, _padding_mask
from screening.ingest.volume import to_hu_int16
from screening.runtime import ClusterConfig
from screening.store import open_scan_store, read_catalog

pytestmark = pytest.mark.real_data

KEY = PseudonymKey(b"k" * 32)

# WG04: transfer syntax folder -> (TransferSyntaxUID, largest |stored - REF| per image).
# The lossy limits are the ones SOURCE.txt documents for pydicom 3.0.2 + pylibjpeg.
WG04 = {
    "J2KI": ("1.2.840.10008.1.2.4.91", {"CT1": 352, "CT2": 402}),  # JPEG 2000 (lossy)
    "J2KR": ("1.2.840.10008.1.2.4.90", {"CT1": 0, "CT2": 0}),  # JPEG 2000 lossless
    "JLSL": ("1.2.840.10008.1.2.4.80", {"CT1": 0, "CT2": 0}),  # JPEG-LS lossless
    "JLSN": ("1.2.840.10008.1.2.4.81", {"CT1": 4, "CT2": 4}),  # JPEG-LS near-lossless
    "JPLL": ("1.2.840.10008.1.2.4.70", {"CT1": 0, "CT2": 0}),  # JPEG lossless SV1
    "RLE": ("1.2.840.10008.1.2.5", {"CT1": 0, "CT2": 0}),  # RLE lossless
}
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
HU_MIN, HU_MAX = -1024, 32767
STORE_ENTRIES = {"catalog", "scans", "store.json"}  # what a finished ingest leaves in STORE


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(real_data: Path) -> Iterator[ClusterConfig]:
    """One real local Dask cluster for every ingest in this module.

    ``dashboard_address=":0"``: with ``None`` the scheduler's HTTP server still binds 8787 and
    warns whenever another test session on the machine holds that port.
    """
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    ) as lc:
        yield ClusterConfig(scheduler=lc.scheduler_address)


@pytest.fixture(scope="module")
def hcc048_folder(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HCC048 archive extracted by tarfile (not the library), for the independent read."""
    dest = tmp_path_factory.mktemp("hcc048-extracted")
    with tarfile.open(real_data / "hcc048-portal-venous" / "HCC048_portal_venous.tar.gz") as tf:
        tf.extractall(dest, filter="data")
    folder = dest / "HCC048_portal_venous"
    assert len(list(folder.glob("*.dcm"))) == 89
    return folder


@pytest.fixture(scope="module")
def hcc048(
    real_data: Path, cluster: ClusterConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The .tar.gz ingested directly as a SOURCE (the library extracts it into staging)."""
    archive = real_data / "hcc048-portal-venous" / "HCC048_portal_venous.tar.gz"
    before = _tree(archive.parent)
    root = tmp_path_factory.mktemp("hcc048-store")
    store = root / "store"
    summary = ingest([str(archive)], store, key=KEY, cluster=cluster)
    return {
        "archive": archive,
        "root": root,
        "store": store,
        "rows": _rows(store),
        "summary": summary,
        "source_before": before,
        "source_after": _tree(archive.parent),
    }


# ---------------------------------------------------------------------------------- helpers


def _rows(store: Path) -> list[dict[str, Any]]:
    return read_catalog(store).to_pylist()


def _only(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any]:
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, [(r["source_path"], r["status"]) for r in rows])
    return hits[0]


@functools.cache
def _wg04_reference(path: str) -> NDArray[Any]:
    """Stored values of a zstd-compressed uncompressed reference DICOM."""
    raw = Zstd().decode(Path(path).read_bytes())
    ds = pydicom.dcmread(io.BytesIO(bytes(raw)))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # explicit VR LE
    return np.asarray(ds.pixel_array)


def _hu(
    stored: NDArray[Any], slope: float, intercept: float, pad: NDArray[np.bool_] | None
) -> NDArray[np.int16]:
    """Independent HU: float rescale, padding to air, clip to [-1024, 32767], round."""
    hu = stored.astype(np.float64) * slope + intercept
    if pad is not None:
        hu[pad] = HU_MIN
    return np.rint(np.clip(hu, HU_MIN, HU_MAX)).astype(np.int16)


def _dicom_volume_lps(
    files: Sequence[Path],
) -> tuple[NDArray[np.int16], tuple[float, float, float], tuple[float, float, float]]:
    """Read an axis-aligned axial series without the library: (z, y, x) HU toward S, P, L.

    Returns the volume, spacing ``[z, y, x]`` and origin (LPS ``[x, y, z]`` of voxel 0,0,0).
    """
    dss = [pydicom.dcmread(f) for f in files]
    iop = np.asarray(dss[0].ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = iop[:3], iop[3:]  # LPS steps of increasing column / row index
    for d in (row_dir, col_dir):
        assert np.isclose(np.abs(d).max(), 1.0, atol=1e-4), f"not axis-aligned: {iop}"
    assert {int(np.argmax(np.abs(row_dir))), int(np.argmax(np.abs(col_dir)))} == {0, 1}
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))  # LPS z increases to superior
    z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    steps = np.diff(z)
    assert np.allclose(steps, steps[0], atol=1e-3) and steps[0] > 0

    columns_along_x = int(np.argmax(np.abs(row_dir))) == 0
    planes = []
    for d in dss:
        stored = np.asarray(d.pixel_array)
        pad = (stored == int(d.PixelPaddingValue)) if "PixelPaddingValue" in d else None
        hu = _hu(stored, float(d.RescaleSlope), float(d.RescaleIntercept), pad)  # (row, col)
        if columns_along_x:
            flip_y, flip_x = col_dir[1] < 0, row_dir[0] < 0
        else:  # columns run along y: transpose so that axis 0 is y
            hu = hu.T
            flip_y, flip_x = row_dir[1] < 0, col_dir[0] < 0
        if flip_y:
            hu = hu[::-1]
        if flip_x:
            hu = hu[:, ::-1]
        planes.append(hu)
    volume = np.ascontiguousarray(np.stack(planes))

    dy, dx = (float(v) for v in dss[0].PixelSpacing)  # [row spacing, column spacing]
    spacing_y, spacing_x = (dy, dx) if columns_along_x else (dx, dy)
    # Voxel (0,0,0): the corner of the lowest slice with the smallest LPS x and y.
    ipp = np.asarray(dss[0].ImagePositionPatient, dtype=np.float64)
    n_rows, n_cols = int(dss[0].Rows), int(dss[0].Columns)
    corners = [
        ipp + a * (n_cols - 1) * dx * row_dir + b * (n_rows - 1) * dy * col_dir
        for a in (0, 1)
        for b in (0, 1)
    ]
    origin = np.min(corners, axis=0)
    return (
        volume,
        (float(steps[0]), spacing_y, spacing_x),
        (float(origin[0]), float(origin[1]), float(origin[2])),
    )


def _nifti_lps(path: Path) -> tuple[NDArray[Any], tuple[float, float, float]]:
    """A NIfTI's data as (z, y, x) toward S, P, L via nibabel's orientation tools; origin LPS."""
    img = nib.load(path)
    ornt = nib.orientations.io_orientation(img.affine)
    to_lps = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt(("L", "P", "S")))
    data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), to_lps)
    shape = np.array(img.shape[:3])
    corners = np.array([[i, j, k, 1] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    corners[:, :3] *= shape - 1
    ras = (img.affine @ corners.T).T[:, :3]
    lps_min = np.min(ras * np.array([-1.0, -1.0, 1.0]), axis=0)
    return np.ascontiguousarray(data.transpose(2, 1, 0)), (
        float(lps_min[0]),
        float(lps_min[1]),
        float(lps_min[2]),
    )


def _eroded_median(ct: NDArray[np.int16], mask: NDArray[np.bool_]) -> float:
    core = ndimage.binary_erosion(mask, iterations=1)
    assert core.sum() > 1000, "eroded mask nearly empty"
    return float(np.median(ct[core]))


def _sha256(ct: NDArray[np.int16]) -> str:
    return hashlib.sha256(np.ascontiguousarray(ct, dtype="<i2").tobytes()).hexdigest()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with size and mtime (to prove nothing was written there)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _write_manifest(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[str(v) for v in row] for row in rows])
    return path


# ------------------------------------------------------------------ 1. WG04 transfer syntaxes


@pytest.mark.parametrize("image", ["CT1", "CT2"])
@pytest.mark.parametrize("syntax", sorted(WG04))
def test_wg04_every_transfer_syntax_decodes_to_the_reference(
    real_data: Path, syntax: str, image: str
) -> None:
    wg04 = real_data / "wg04-transfer-syntaxes" / "WG04"
    path = wg04 / syntax / f"{image}_{syntax}"
    uid, max_diff = WG04[syntax][0], WG04[syntax][1][image]

    header = read_header(str(path))
    assert isinstance(header, DicomHeader), header
    assert header.transfer_syntax == uid
    assert header.has_pixels and (header.rows, header.columns) == (512, 512)

    ref = _wg04_reference(str(wg04 / "REF" / f"{image}_UNC.zst"))
    ds = pydicom.dcmread(path)
    stored = np.asarray(ds.pixel_array)
    assert stored.shape == ref.shape == (512, 512)
    diff = np.abs(stored.astype(np.int64) - ref.astype(np.int64))
    if max_diff == 0:
        np.testing.assert_array_equal(stored, ref)
    else:
        assert 0 < diff.max() <= max_diff, diff.max()

    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert (slope, intercept) == ((1.0, -1024.0) if image == "CT1" else (1.0, 0.0))
    padding = _padding_mask(ds, stored)
    hu = to_hu_int16(stored, slope, intercept, padding)
    assert hu.dtype == np.int16
    ref_pad = (ref == -2000) if image == "CT1" else None
    ref_hu = _hu(ref, slope, intercept, ref_pad)
    if max_diff == 0:
        np.testing.assert_array_equal(hu, ref_hu)
    else:
        assert np.abs(hu.astype(np.int64) - ref_hu).max() <= max_diff
    assert hu.min() >= HU_MIN

    if image == "CT1":  # GE: padding -2000 stored, i.e. -3024 HU before the clip
        assert int(ds.PixelPaddingValue) == -2000
        assert padding is not None
        np.testing.assert_array_equal(padding, stored == -2000)
        assert ref_pad is not None
        assert ref_pad.sum() > 50_000  # the round field of view leaves ~55k corner pixels
        if max_diff == 0:
            np.testing.assert_array_equal(padding, ref_pad)
        # Lossy codecs blur the padding edge (J2KI keeps only ~2k pixels at exactly -2000),
        # yet every padding pixel of the reference must still come out as air.
        assert np.all(hu[ref_pad] == HU_MIN)
        assert np.all(hu[padding] == HU_MIN)
        assert np.count_nonzero(hu[~ref_pad] > 0) > 10_000  # real tissue survives
    else:  # Toshiba: no padding value; stored -2048 at intercept 0 is clipped to air
        assert "PixelPaddingValue" not in ds and padding is None
        assert ref.min() == -2048 and hu.min() == HU_MIN


@pytest.mark.parametrize("image", ["CT1", "CT2"])
@pytest.mark.parametrize("syntax", sorted(WG04))
def test_wg04_series_reader_decodes_every_syntax(real_data: Path, syntax: str, image: str) -> None:
    """``read_dicom_series`` on a two-slice stack made of the same file 1 mm apart."""
    wg04 = real_data / "wg04-transfer-syntaxes" / "WG04"
    header = read_header(str(wg04 / syntax / f"{image}_{syntax}"))
    assert isinstance(header, DicomHeader) and header.position is not None
    x, y, z = header.position
    above = dataclasses.replace(header, position=(x, y, z + 1.0), sop_uid=header.sop_uid + ".2")
    volume, _ = read_dicom_series(
        [above, header], ["above", "below"], ValidationConfig(min_slices=2)
    )
    ref = _wg04_reference(str(wg04 / "REF" / f"{image}_UNC.zst"))
    ref_hu = _hu(ref, 1.0, -1024.0 if image == "CT1" else 0.0, None)
    max_diff = WG04[syntax][1][image]
    assert volume.ct_hu.shape == (2, 512, 512)
    for k in range(2):  # IOP is identity: canonical (y, x) is (row, column)
        assert np.abs(volume.ct_hu[k].astype(np.int64) - ref_hu).max() <= max_diff
    assert volume.spacing_mm == pytest.approx(
        (1.0, header.pixel_spacing[0], header.pixel_spacing[1])
    )
    assert volume.origin_mm == pytest.approx(header.position)
    assert volume.source["transfer_syntax"] == WG04[syntax][0]
    expected_padding = 2 * int(np.count_nonzero(ref == -2000)) if image == "CT1" else 0
    if max_diff == 0:
        assert volume.source["padding_voxels"] == expected_padding


# ------------------------------------------------------- 2. dicom2nifti series to be rejected


def test_dicom2nifti_failing_series_get_their_reason_codes(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
) -> None:
    src = real_data / "dicom2nifti-failing" / "failing"
    store = tmp_path / "store"
    summary = ingest([str(src)], store, key=KEY, cluster=cluster)
    rows = _rows(store)

    dicom = {
        "gantrytilting/001": ("GANTRY_TILT", ()),
        "notavolume/001": ("NOT_A_VOLUME", ("001.dcm", "004.dcm")),
        # 28.1 -> 38.1 mm after 5 mm steps: the gap is between slices 0009 and 0010
        "sliceincrement/001": (
            "SLICE_INCREMENT_INCONSISTENT",
            ("IM-0001-0009-0001.dcm", "IM-0001-0010-0001.dcm"),
        ),
        # file 0004 is missing: the gap is between 0003 and 0005
        "sliceincrement/002": (
            "SLICE_INCREMENT_INCONSISTENT",
            ("IM-0001-0003.dcm", "IM-0001-0005.dcm"),
        ),
    }
    for folder, (reason, files_named) in dicom.items():
        source_path = f"{src}/{folder}"  # the SOURCE argument as given, then the series folder
        row = _only(rows, source_path=source_path)
        assert (row["status"], row["reason"]) == ("rejected", reason), row
        assert row["source_format"] == "dicom" and row["series_key"] == "series_uid"
        assert row["n_slices"] == 4
        assert row["store_path"] is None
        assert source_path in row["message"], row["message"]
        for name in files_named:
            assert f"{source_path}/{name}" in row["message"], row["message"]
            assert (src / folder / name).is_file()

    # The two dicom2nifti outputs next to sliceincrement/002 are NIfTI images, so ingest takes
    # them as scans. They are resampled along the 15.5 deg tilted stack (affine column k is
    # (0, -0.208, 0.75)): refusing them as NOT_AXIAL is right, and says which file.
    for name in ("002_ground_truth.nii.gz", "002_ground_truth_reoriented.nii.gz"):
        source_path = f"{src}/sliceincrement/{name}"
        row = _only(rows, source_path=source_path)
        assert (row["status"], row["reason"]) == ("rejected", "NOT_AXIAL"), row
        assert row["source_format"] == "nifti"
        assert "15.5 deg" in row["message"] and source_path in row["message"]

    assert len(rows) == 6
    assert summary.counts == {"rejected": 6}
    assert summary.reasons == {
        "SLICE_INCREMENT_INCONSISTENT": 2,
        "NOT_AXIAL": 2,
        "GANTRY_TILT": 1,
        "NOT_A_VOLUME": 1,
    }
    assert summary.n_files == 18
    assert not list(store.glob("scans/*.zarr"))  # nothing rejected was stored
    assert {p.name for p in store.iterdir()} == STORE_ENTRIES - {"scans"}

    got = duckdb.sql(
        "select source_path, status, reason, cohort from read_parquet("
        f"'{store}/catalog/*/*.parquet', hive_partitioning=true) order by source_path"
    ).fetchall()
    assert got == sorted((r["source_path"], r["status"], r["reason"], "default") for r in rows)
    assert dict(
        duckdb.sql(
            f"select reason, count(*) from read_parquet('{store}/catalog/*/*.parquet') "
            "group by reason"
        ).fetchall()
    ) == dict(summary.reasons)


# ---------------------------------------------------------------------- 3. dcmqi: 3 slices


def test_dcmqi_three_slices_are_too_few(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
) -> None:
    src = real_data / "dcmqi" / "ct-3slice"
    ingest([str(src)], tmp_path / "default", key=KEY, cluster=cluster)
    row = _only(_rows(tmp_path / "default"))
    assert (row["status"], row["reason"], row["n_slices"]) == ("rejected", "TOO_FEW_SLICES", 3)
    assert row["source_path"] == str(src)
    assert "only 3 slice(s)" in row["message"] and str(src) in row["message"]

    # The geometry is otherwise fine: with min_slices=3 the series is accepted, and its
    # oral-only contrast (CT colonography) is not recorded in the header.
    cfg = IngestConfig(validation=ValidationConfig(min_slices=3))
    ingest([str(src)], tmp_path / "three", key=KEY, cluster=cluster, cfg=cfg)
    row = _only(_rows(tmp_path / "three"))
    assert row["status"] == "ok", row
    assert (row["n_slices"], row["rows"], row["columns"]) == (3, 512, 512)
    assert row["spacing_z_mm"] == pytest.approx(1.0, abs=1e-3)
    assert row["spacing_x_mm"] == pytest.approx(0.810547, abs=1e-6)
    assert row["contrast_header"] is False
    assert row["manufacturer"] == "GE MEDICAL SYSTEMS"
    ct = open_scan_store(tmp_path / "three" / row["store_path"]).read("ct")
    expected, _, _ = _dicom_volume_lps(sorted(src.glob("*.dcm")))
    np.testing.assert_array_equal(ct, expected)


# ------------------------------------------------------------- 4. HCC048: a full GE series


def test_hcc048_catalog_row(hcc048: dict[str, Any], hcc048_folder: Path) -> None:
    row = _only(hcc048["rows"], status="ok")
    assert row["source_format"] == "dicom" and row["series_key"] == "series_uid"
    assert row["source_path"] == f"{hcc048['archive']}!HCC048_portal_venous"
    assert (row["n_slices"], row["rows"], row["columns"]) == (89, 512, 512)
    assert row["spacing_z_mm"] == pytest.approx(2.5)
    assert row["spacing_y_mm"] == pytest.approx(0.703125)
    assert row["spacing_x_mm"] == pytest.approx(0.703125)
    assert row["kvp"] == pytest.approx(140.0)
    assert row["convolution_kernel"] == "STANDARD"
    assert row["slice_thickness_mm"] == pytest.approx(2.5)
    assert row["patient_position"] == "FFS"
    assert row["study_year"] == 2001
    assert row["patient_pseudo_id"] is not None  # the de-identified PatientID, keyed
    assert row["has_seg_reference"] is False

    first = pydicom.dcmread(sorted(hcc048_folder.glob("*.dcm"))[0], stop_before_pixels=True)
    # SOURCE.txt calls it a GE series, but the de-identified header has an empty Manufacturer
    # and no ManufacturerModelName: the catalog must say "unknown", not guess.
    assert first.Manufacturer == "" and "ManufacturerModelName" not in first
    assert row["manufacturer"] is None and row["model"] is None
    # Portal-venous (ATTRIBUTION.md); the header leaves ContrastBolusAgent empty but records
    # the route 'Oral & IV', which is intravenous contrast.
    assert first.ContrastBolusAgent == "" and first.ContrastBolusRoute == "Oral & IV"
    assert row["contrast_header"] is True


def test_hcc048_store_matches_an_independent_read(
    hcc048: dict[str, Any], hcc048_folder: Path
) -> None:
    row = _only(hcc048["rows"], status="ok")
    scan = open_scan_store(hcc048["store"] / row["store_path"])
    ct = scan.read("ct")
    assert ct.dtype == np.int16 and ct.shape == (89, 512, 512)

    expected, spacing, origin = _dicom_volume_lps(sorted(hcc048_folder.glob("*.dcm")))
    np.testing.assert_array_equal(ct, expected)
    assert scan.attrs["spacing_mm"] == pytest.approx(list(spacing))
    assert scan.attrs["origin_mm"] == pytest.approx(list(origin))
    assert origin == pytest.approx((-180.0, -180.0, -396.0))  # ATTRIBUTION: z -396 .. -176
    assert scan.attrs["ct_sha256"] == row["ct_sha256"] == _sha256(expected)
    assert scan.attrs["source"]["transfer_syntax"] == "1.2.840.10008.1.2.1"
    assert scan.attrs["source"]["rescale_intercept"] == [-1024.0]
    # the liver is enhanced (ATTRIBUTION: ~100 HU): a plausible soft-tissue range exists
    assert np.count_nonzero((ct > 80) & (ct < 140)) > 100_000

    ome = scan.attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [(a["name"], a["type"], a["unit"]) for a in ms["axes"]] == [
        ("z", "space", "millimeter"),
        ("y", "space", "millimeter"),
        ("x", "space", "millimeter"),
    ]
    dataset = ms["datasets"][0]
    assert dataset["path"] == "ct"
    transforms = {t["type"]: t for t in dataset["coordinateTransformations"]}
    assert transforms["scale"]["scale"] == pytest.approx(list(spacing))
    assert transforms["translation"]["translation"] == pytest.approx(list(origin[::-1]))


def test_hcc048_archive_license_row_staging_and_nothing_outside(hcc048: dict[str, Any]) -> None:
    rows, archive, store = hcc048["rows"], hcc048["archive"], hcc048["store"]
    assert len(rows) == 2
    junk = _only(rows, status="rejected")  # the LICENSE file packed beside the slices
    assert junk["reason"] == "NO_DICM" and junk["source_format"] is None
    assert junk["source_path"] == f"{archive}!HCC048_portal_venous/LICENSE"
    assert junk["source_path"] in junk["message"]
    assert hcc048["summary"].counts == {"ok": 1, "rejected": 1}
    assert hcc048["summary"].n_files == 90

    assert not (store / ".staging").exists()
    assert not (store / ".ingest.lock").exists()
    assert {p.name for p in store.iterdir()} == STORE_ENTRIES
    assert [p.name for p in hcc048["root"].iterdir()] == ["store"]
    assert hcc048["source_after"] == hcc048["source_before"]  # nothing extracted beside it


# ---------------------------------------------------- 5. TotalSegmentator patient A (NIfTI)


def test_patient_a_nifti_masks_via_manifest(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
) -> None:
    ts = real_data / "totalsegmentator-example"
    manifest = _write_manifest(
        tmp_path / "manifest.csv",
        ["image", "liver_mask", "liver_label", "spleen_mask", "spleen_label", "case_id"],
        [
            # full grid, one binary float mask per organ (RAS)
            [ts / "example_ct.nii.gz", ts / "example_seg/liver.nii.gz", "",
             ts / "example_seg/spleen.nii.gz", "", "A-full"],
            # the 30-slice crop with its multilabel mask (5 liver, 1 spleen)
            [ts / "example_ct_sm.nii.gz", ts / "example_seg.nii.gz", 5,
             ts / "example_seg.nii.gz", 1, "A-crop"],
        ],
    )  # fmt: skip
    store = tmp_path / "store"
    ingest([], store, manifest=read_manifest(manifest, "default"), key=None, cluster=cluster)
    rows = _rows(store)
    assert len(rows) == 2

    full = _only(rows, case_id="A-full")
    assert full["status"] == "ok", full
    assert full["source_format"] == "nifti"
    assert full["has_seg_reference"] is True and full["mask_resampled"] is False
    assert (full["n_slices"], full["rows"], full["columns"]) == (112, 101, 122)
    assert full["patient_pseudo_id"] is None and full["contrast_header"] is None
    scan = open_scan_store(store / full["store_path"])
    ct, seg = scan.read("ct"), scan.read("seg_reference")

    raw, origin = _nifti_lps(ts / "example_ct.nii.gz")  # int32 RAS -> LPS (z, y, x)
    np.testing.assert_array_equal(ct, np.clip(raw, HU_MIN, HU_MAX).astype(np.int16))
    assert scan.attrs["origin_mm"] == pytest.approx(list(origin))
    assert scan.attrs["spacing_mm"] == pytest.approx([3.0, 3.0, 3.0])
    assert full["ct_sha256"] == _sha256(ct)
    liver_ref = _nifti_lps(ts / "example_seg/liver.nii.gz")[0] > 0.5
    spleen_ref = _nifti_lps(ts / "example_seg/spleen.nii.gz")[0] > 0.5
    assert set(np.unique(seg).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(seg == 1, liver_ref)
    np.testing.assert_array_equal(seg == 2, spleen_ref & ~liver_ref)

    # Physics, not bookkeeping: x increases toward the patient's left, so the liver (right
    # upper quadrant) has the lower x centroid and the spleen (left, posterior) the higher.
    liver_c = ndimage.center_of_mass(seg == 1)
    spleen_c = ndimage.center_of_mass(seg == 2)
    nx = ct.shape[2]
    assert liver_c[2] < nx / 2 < spleen_c[2], (liver_c, spleen_c)
    assert liver_c[1] < spleen_c[1]  # y toward posterior: the spleen lies behind the liver
    # README (eroded 1 voxel, median HU): liver 47, spleen 35 -> non-contrast, not steatotic
    assert _eroded_median(ct, seg == 1) == pytest.approx(47, abs=3)
    assert _eroded_median(ct, seg == 2) == pytest.approx(35, abs=3)

    crop = _only(rows, case_id="A-crop")
    assert crop["status"] == "ok", crop
    assert crop["has_seg_reference"] is True and crop["mask_resampled"] is False
    assert crop["n_slices"] == 30
    scan = open_scan_store(store / crop["store_path"])
    ct, seg = scan.read("ct"), scan.read("seg_reference")
    multi = _nifti_lps(ts / "example_seg.nii.gz")[0]
    np.testing.assert_array_equal(seg == 1, multi == 5)
    np.testing.assert_array_equal(seg == 2, multi == 1)
    assert np.any(multi == 52) and seg.max() == 2  # other organs (aorta 52, ...) are dropped
    assert _eroded_median(ct, seg == 1) == pytest.approx(47, abs=5)
    assert _eroded_median(ct, seg == 2) == pytest.approx(35, abs=5)


def test_nifti_with_too_few_slices_is_rejected(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
) -> None:
    """min_slices holds for NIfTI as for DICOM (a 5-slice crop of patient A)."""
    img = nib.load(real_data / "totalsegmentator-example" / "example_ct_sm.nii.gz")
    thin = nib.Nifti1Image(np.asanyarray(img.dataobj)[:, :, 10:15], img.affine, img.header)
    path = tmp_path / "five_slices.nii.gz"
    nib.save(thin, path)
    ingest([str(path)], tmp_path / "store", key=None, cluster=cluster)
    row = _only(_rows(tmp_path / "store"))
    assert (row["status"], row["reason"]) == ("rejected", "TOO_FEW_SLICES"), row
    assert "only 5" in row["message"] and str(path) in row["message"]
    assert row["store_path"] is None


# ------------------------------------------- 6. TotalSegmentator patient B (DICOM, J2K, LAS)


def test_patient_b_j2k_series_without_series_uid(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
) -> None:
    src = real_data / "totalsegmentator-example" / "example_ct_dicom"
    assert ValidationConfig().min_slices <= 20  # the default accepts this 20-slice series
    ingest([str(src)], tmp_path / "store", key=KEY, cluster=cluster)
    row = _only(_rows(tmp_path / "store"))
    assert row["status"] == "ok", row
    assert row["series_key"] == "geometry"
    assert "SeriesInstanceUID missing" in row["message"]
    assert row["contrast_header"] is True  # ContrastBolusAgent 'APPLIED'
    assert (row["n_slices"], row["rows"], row["columns"]) == (20, 512, 512)
    assert row["spacing_z_mm"] == pytest.approx(2.0)
    assert row["spacing_x_mm"] == pytest.approx(0.9765625)
    assert row["manufacturer"] == "SIEMENS"
    assert row["slice_thickness_mm"] == pytest.approx(3.0)  # thickness 3, increment 2
    assert row["source_path"] == str(src)

    scan = open_scan_store(tmp_path / "store" / row["store_path"])
    assert scan.attrs["source"]["transfer_syntax"] == J2K_LOSSLESS
    expected, spacing, origin = _dicom_volume_lps(sorted(src.iterdir()))
    np.testing.assert_array_equal(scan.read("ct"), expected)
    assert scan.attrs["spacing_mm"] == pytest.approx(list(spacing))
    assert scan.attrs["origin_mm"] == pytest.approx(list(origin))
    assert row["ct_sha256"] == _sha256(expected)


def test_patient_b_las_mask_lands_on_the_dicom_voxels(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
) -> None:
    ts = real_data / "totalsegmentator-example"
    mask = ts / "example_seg_dicom.nii.gz"
    assert nib.aff2axcodes(nib.load(mask).affine) == ("L", "A", "S")  # y flipped vs the DICOM
    manifest = _write_manifest(
        tmp_path / "manifest.csv",
        ["image", "liver_mask", "liver_label", "spleen_mask", "spleen_label"],
        [[ts / "example_ct_dicom", mask, 5, mask, 1]],
    )
    store = tmp_path / "store"  # a fresh store: an ok series is not re-ingested into its own
    ingest([], store, manifest=read_manifest(manifest, "default"), key=KEY, cluster=cluster)
    row = _only(_rows(store))
    assert row["status"] == "ok", row
    assert row["has_seg_reference"] is True and row["mask_resampled"] is False
    scan = open_scan_store(store / row["store_path"])
    ct, seg = scan.read("ct"), scan.read("seg_reference")

    multi = _nifti_lps(mask)[0]
    assert multi.shape == ct.shape == (20, 512, 512)
    np.testing.assert_array_equal(seg == 1, multi == 5)
    np.testing.assert_array_equal(seg == 2, multi == 1)
    # README: liver 93, spleen 81 HU (contrast-enhanced). The y-flipped mask would put the
    # spleen label on air (about -87 HU), so these medians prove the alignment.
    assert _eroded_median(ct, seg == 1) == pytest.approx(93, abs=8)
    assert _eroded_median(ct, seg == 2) == pytest.approx(81, abs=8)


def test_header_values_decoded_raw_equal_pydicom_on_every_real_file(
    real_data: Path, hcc048_folder: Path
) -> None:
    """Discovery decodes its header values from the raw bytes; on every real file (all WG04
    transfer syntaxes, the dicom2nifti failures, dcmqi, TotalSegmentator, HCC048) the header
    equals the one from pydicom's own conversion."""
    files = [p for p in sorted(real_data.rglob("*")) if p.is_file()]
    files += sorted(hcc048_folder.glob("*.dcm"))
    n_headers = 0
    for p in files:
        fast, slow = read_header(str(p)), read_header(str(p), raw_values=False)
        assert fast == slow, p.relative_to(p.parents[2])
        n_headers += isinstance(fast, DicomHeader)
    assert n_headers >= 89 + 30  # HCC048 plus the other series: the comparison was not vacuous
