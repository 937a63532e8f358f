"""Hostile inputs: each case is a cohort of one good series plus one bad input.

Every case asserts the exact reason code of the bad input (a row naming its file, never a
traceback), that no patient identifier and no extracted file is left behind, and that the good
series beside it is ingested exactly as when it is ingested alone (same ``ct_sha256``). Add a
case here for every new kind of bad input (docs/fault-model.md lists what each layer checks).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from screening.errors import KeyMissingError
from screening.ingest import IngestConfig, PseudonymKey, ValidationConfig, ingest
from screening.runtime import ClusterConfig
from screening.store import read_catalog
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.writers import DicomInfo, write_dicom_series

KEY = PseudonymKey(b"hostile-key-" + b"h" * 32)
CFG = IngestConfig(validation=ValidationConfig(min_slices=8))
PATIENT = "HOSTILE-PATIENT-5"


def _series(out: Path, seed: int, syntax: str = "explicit") -> list[Path]:
    phantom = make_phantom(PhantomSpec(), ScanGeometry.preset("small"), seed=seed)
    info = DicomInfo(uid_seed=f"hostile-{seed}", patient_id=PATIENT, transfer_syntax=syntax)
    return write_dicom_series(phantom, out, info)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterConfig) -> dict[str, Any]:
    """The good series, and its checksum when ingested alone."""
    root = tmp_path_factory.mktemp("good")
    _series(root / "good", 1)
    store = root / "store"
    ingest([str(root / "good")], store, key=KEY, cfg=CFG, cluster=cluster)
    (row,) = read_catalog(store).to_pylist()
    assert row["status"] == "ok"
    return {"dir": root / "good", "sha": row["ct_sha256"]}


def _ingest_with(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig, build: Callable[[Path], Any]
) -> tuple[list[dict[str, Any]], Path]:
    """Ingest a cohort folder holding the good series and what ``build`` adds; return the
    rows that are not the good series' (which must be unchanged) and the store."""
    cohort = tmp_path / "cohort"
    shutil.copytree(good["dir"], cohort / "good")
    build(cohort)
    store = tmp_path / "store"
    ingest([str(cohort)], store, key=KEY, cfg=CFG, cluster=cluster)
    rows = read_catalog(store).to_pylist()
    mine = [r for r in rows if "cohort/good" in (r["source_path"] or "")]
    assert len(mine) == 1 and mine[0]["status"] == "ok", mine
    assert mine[0]["ct_sha256"] == good["sha"]  # the rest of the cohort is unchanged
    assert not (store / ".staging").exists()
    _no_identifier(store)
    return [r for r in rows if r is not mine[0]], store


def _no_identifier(store: Path) -> None:
    for f in store.rglob("*"):
        assert PATIENT not in f.name
        if f.is_file() and f.suffix in (".json", ".parquet", ""):
            assert PATIENT.encode() not in f.read_bytes(), f


def _only(rows: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    assert [r["reason"] for r in rows] == [reason], [(r["reason"], r["message"]) for r in rows]
    assert rows[0]["status"] in ("rejected", "failed")
    return rows[0]


def _edit(paths: list[Path], change: Callable[[pydicom.Dataset, int], None]) -> None:
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        change(ds, i)
        ds.save_as(p)


def test_rows_smaller_than_the_pixel_data(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    def build(cohort: Path) -> None:
        paths = _series(cohort / "rows", 2)
        _edit(paths, lambda ds, i: setattr(ds, "Rows", ds.Rows // 2))

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "PIXELDATA_LONG")
    assert "rows/IM000" in row["message"] and "Rows x Columns" in row["message"]


def test_two_reconstructions_interleaved_under_one_series_uid(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    def build(cohort: Path) -> None:
        soft = _series(cohort / "mixed", 3)
        first = pydicom.dcmread(soft[0])
        lung = _series(tmp_path / "lung", 3)  # the same scan, reconstructed again ...
        step = float(first.SpacingBetweenSlices or first.SliceThickness)

        def relabel(ds: pydicom.Dataset, i: int) -> None:
            ds.SeriesInstanceUID = first.SeriesInstanceUID
            ds.ConvolutionKernel = "LUNG"  # ... with another kernel, half a step apart
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ds.SOPInstanceUID}9"
            pos = [float(v) for v in ds.ImagePositionPatient]
            ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + step / 2]

        _edit(lung, relabel)
        for p in lung:
            p.rename(cohort / "mixed" / f"L{p.name}")

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "MULTIPLE_RECONSTRUCTIONS")
    assert "LUNG" in row["message"] and "STANDARD" in row["message"]


def test_one_sop_instance_uid_with_two_different_images(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    def build(cohort: Path) -> None:
        paths = _series(cohort / "conflict", 4)
        ds = pydicom.dcmread(paths[5])
        ds.PixelData = (ds.pixel_array + 100).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(cohort / "conflict" / "copy_of_5.dcm")
        shutil.copy(paths[6], cohort / "conflict" / "exact_copy_of_6.dcm")  # harmless

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "DUPLICATE_CONFLICT")
    assert "copy_of_5.dcm" in row["message"] and "IM00006.dcm" in row["message"]


def test_a_damaged_slice_that_decodes_without_error(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    """No checksum guards uncompressed pixel data: garbage bytes decode into a wrong slice."""

    def build(cohort: Path) -> None:
        paths = _series(cohort / "damaged", 5)
        ds = pydicom.dcmread(paths[7])
        noise = np.random.default_rng(0).integers(0, 4000, ds.pixel_array.shape)
        ds.PixelData = noise.astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(paths[7])

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "PIXELDATA_CORRUPT")
    assert "IM00008.dcm" in row["message"]


@pytest.mark.real_data
def test_a_damaged_jpeg2000_codestream_on_real_ct(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig, real_data: Path
) -> None:
    """JPEG 2000 is embedded: a codestream whose last two thirds are zeros is still valid and
    decodes, without an error, into a wrong slice (here ~130 HU off on average)."""
    from pydicom.encaps import encapsulate, generate_frames

    def build(cohort: Path) -> None:
        src = real_data / "totalsegmentator-example" / "example_ct_dicom"
        shutil.copytree(src, cohort / "real")
        files = sorted(p for p in (cohort / "real").iterdir() if p.is_file())
        victim = files[9]
        ds = pydicom.dcmread(victim, force=True)
        frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
        frame[len(frame) // 3 : -2] = bytes(len(frame) - 2 - len(frame) // 3)
        ds.PixelData = encapsulate([bytes(frame)])
        ds.save_as(victim)

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    _only(rows, "PIXELDATA_CORRUPT")


def test_a_truncated_codestream_is_corrupt_not_a_missing_codec(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    def build(cohort: Path) -> None:
        paths = _series(cohort / "cut", 6, "j2k")
        ds = pydicom.dcmread(paths[3])
        from pydicom.encaps import encapsulate, generate_frames

        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([frame[: len(frame) // 2]])
        ds.save_as(paths[3])

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "PIXELDATA_CORRUPT")
    assert "IM00004.dcm" in row["message"]


def _nested_zip(inner: bytes, depth: int) -> bytes:
    data = inner
    for level in range(depth):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{depth - level}.zip", data)
        data = buf.getvalue()
    return data


@pytest.mark.parametrize("depth", [12, 1500])
def test_archives_nested_too_deep(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig, depth: int
) -> None:
    def build(cohort: Path) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for p in _series(tmp_path / "inner", 7):
                zf.write(p, p.name)
        (cohort / "deep.zip").write_bytes(_nested_zip(buf.getvalue(), depth - 1))

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "ARCHIVE_TOO_DEEP")
    assert "cohort/deep.zip!" in row["source_path"]


def test_a_folder_name_that_is_not_utf8(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    def build(cohort: Path) -> None:
        folder = os.fsencode(cohort) + b"/caf\xe9-latin1"  # cp1252 bytes, not UTF-8
        os.mkdir(folder)
        _series(Path(os.fsdecode(folder)), 8)

    rows, store = _ingest_with(tmp_path, good, cluster, build)
    (row,) = rows
    assert row["status"] == "ok" and "caf\ufffd-latin1" in row["source_path"]
    import duckdb  # the catalog is valid UTF-8 Parquet for every reader

    n = duckdb.sql(f"select count(*) from read_parquet('{store}/catalog/*/*.parquet')").fetchall()
    assert n == [(2,)]


def test_symlinked_folders_are_followed_once(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig
) -> None:
    """A series reached through a folder link is ingested; a second link to the same folder
    and a link back up the tree (a cycle) add nothing and do not hang the walk."""

    def build(cohort: Path) -> None:
        _series(tmp_path / "elsewhere" / "series", 10)
        (cohort / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        (cohort / "linked-again").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        (cohort / "good" / "up").symlink_to(cohort, target_is_directory=True)

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    (row,) = rows
    assert row["status"] == "ok" and "linked" in row["source_path"]


def test_a_folder_that_cannot_be_listed_is_a_row(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked: list[Path] = []

    def build(cohort: Path) -> None:
        _series(cohort / "locked" / "series", 9)
        locked.append(cohort / "locked")
        os.chmod(cohort / "locked", 0)

    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # root reads mode-000 folders: refuse as a user's
        if locked and Path(os.fsdecode(path)) == locked[0]:  # kernel would
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # the walk runs in this (client) process
    try:
        rows, _ = _ingest_with(tmp_path, good, cluster, build)
    finally:
        for p in locked:
            os.chmod(p, 0o755)
    row = _only(rows, "UNREADABLE_FILE")
    assert "locked" in row["message"] and "could not be listed" in row["message"]


def test_staging_is_never_left_behind(
    tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw DICOM from archives holds names and IDs: no key → refused before extracting; a
    crash after extracting → removed; left by a SIGKILLed ingest → removed by the next one."""
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in _series(tmp_path / "zipped", 10):
            zf.write(p, f"series/{p.name}")
    store = tmp_path / "store"
    with pytest.raises(KeyMissingError):
        ingest([str(archive)], store, key=None, cfg=CFG, cluster=cluster)
    assert not (store / ".staging").exists()

    import screening.ingest.run as ingest_run

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected crash after extraction")

    monkeypatch.setattr(ingest_run, "plan", crash)
    with pytest.raises(RuntimeError, match="injected"):
        ingest([str(archive)], store, key=KEY, cfg=CFG, cluster=cluster)
    assert not (store / ".staging").exists()
    monkeypatch.undo()

    stale = store / ".staging" / "0123456789abcdef01234567" / "series"
    stale.mkdir(parents=True)
    (stale / "IM00001.dcm").write_bytes(b"left by a SIGKILLed ingest")
    ingest([str(good["dir"])], store, key=KEY, cfg=CFG, cluster=cluster)
    assert not (store / ".staging").exists()


def test_disk_full_while_ingesting_stops_cleanly_and_resumes(
    tmp_path: Path, cluster: ClusterConfig, small_disk: Callable[[int], Path]
) -> None:
    """ENOSPC while extracting an archive and writing stores, on a real tiny filesystem: a
    clear error, no extracted DICOM left, and a re-run after freeing space completes."""
    import subprocess

    from screening.errors import DiskFullError

    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for k in range(3):
            for p in _series(tmp_path / f"zipped{k}", 20 + k):
                zf.write(p, f"series{k}/{p.name}")
    disk = small_disk(1024)  # the archive's content (~1.5 MB) does not fit
    store = disk / "store"
    with pytest.raises(DiskFullError, match="no space left") as err:
        ingest([str(archive)], store, key=KEY, cfg=CFG, cluster=cluster)
    assert "re-run" in str(err.value)
    assert not (store / ".staging").exists()
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    ingest([str(archive)], store, key=KEY, cfg=CFG, cluster=cluster)
    rows = read_catalog(store).to_pylist()
    assert sorted(r["status"] for r in rows) == ["ok", "ok", "ok"]
    assert not (store / ".staging").exists()


def test_invalid_image_planes(tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig) -> None:
    """A zero ImageOrientationPatient (was an INTERNAL_ERROR) and a NaN ImagePositionPatient
    (was sorted last and made the slice step NaN) are rows naming their files."""

    def build(cohort: Path) -> None:
        _edit(_series(cohort / "zero", 11), lambda ds, i: setattr(
            ds, "ImageOrientationPatient", [0, 0, 0, 0, 0, 0]))  # fmt: skip
        nan = _series(cohort / "nan", 12)
        ds = pydicom.dcmread(nan[0])
        ds["ImagePositionPatient"].value = "NaN\\0\\0"
        ds.save_as(nan[0])

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    zero = [r for r in rows if "zero" in r["source_path"]]
    assert [r["reason"] for r in zero] == ["IMAGE_PLANE_INVALID"]
    nan = sorted((r["reason"] or "ok", r["message"] or "") for r in rows if "nan" in
                 r["source_path"])  # fmt: skip
    assert [reason for reason, _ in nan] == ["IMAGE_PLANE_INVALID", "ok"]
    assert "1 file(s)" in nan[0][1] and "IM000" in nan[0][1]  # one file; the rest is a volume


def test_a_damaged_last_slice(tmp_path: Path, good: dict[str, Any], cluster: ClusterConfig) -> None:
    def build(cohort: Path) -> None:
        paths = _series(cohort / "last", 13)
        ds = pydicom.dcmread(paths[-1])
        ds.PixelData = (ds.pixel_array // 3).astype(ds.pixel_array.dtype).tobytes()
        ds.save_as(paths[-1])

    rows, _ = _ingest_with(tmp_path, good, cluster, build)
    row = _only(rows, "PIXELDATA_CORRUPT")
    assert paths_name(row["message"]) == "IM00048.dcm"


def paths_name(message: str) -> str:
    import re

    found = re.findall(r"(IM\d{5}\.dcm)", message)
    return found[0] if found else ""
