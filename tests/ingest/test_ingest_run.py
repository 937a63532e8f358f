"""End to end on a real Dask cluster: a messy synthetic archive -> scan stores + scans table.

Every bad input is its own row with a reason code naming the file; none stops the run.
"""

from __future__ import annotations

import io
import json
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import duckdb
import nibabel as nib
import numpy as np
import pyarrow as pa
import pydicom
import pytest

from screening.errors import ConfigError, KeyMissingError, StoreError
from screening.ingest import (
    IngestConfig,
    PseudonymKey,
    ValidationConfig,
    ingest,
    read_manifest,
)
from screening.runtime import ClusterConfig
from screening.schemas import load_store_layout
from screening.store import open_scan_store, read_catalog
from screening.store.scan import COMPLETION_MARKER
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.phantom import Phantom
from screening.synthetic.writers import DicomInfo, write_dicom_series, write_nifti

KEY = PseudonymKey(b"test-key-" + b"x" * 32)
CFG = IngestConfig(validation=ValidationConfig(min_slices=8))
FAKE_IDENTIFIERS = ("SYN-PATIENT-77", "DOE^JANE", "ACC-99881", "19600101", "Synthetic General")


def _phantom(seed: int, **geom: Any) -> Phantom:
    spec = PhantomSpec(padding_hu=-2000.0)
    return make_phantom(spec, ScanGeometry.preset("small", **geom), seed=seed)


def _info(seed: str, **kw: Any) -> DicomInfo:
    return DicomInfo(
        uid_seed=seed,
        patient_id="SYN-PATIENT-77",
        patient_name="DOE^JANE",
        accession_number="ACC-99881",
        patient_birth_date="19600101",
        **kw,
    )


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An archive tree with one of each kind of bad input, and the phantoms it came from."""
    root = tmp_path_factory.mktemp("messy")
    src = root / "archive"
    good = _phantom(1)
    write_dicom_series(good, src / "patient1" / "good", _info("good"))
    # random file names and order: no .dcm suffix, shuffled names
    shuffled = _phantom(2, patient_position="FFS")
    paths = write_dicom_series(shuffled, src / "patient2" / "shuffled", _info("shuffled"))
    names = [f"x{n:04x}" for n in random.Random(3).sample(range(65536), len(paths))]
    for p, n in zip(paths, names, strict=True):
        p.rename(p.with_name(n))
    # two series in one folder
    write_dicom_series(_phantom(3), src / "two", _info("two-a"))
    for p in write_dicom_series(_phantom(4), root / "tmp_b", _info("two-b")):
        p.rename(src / "two" / f"B_{p.name}")
    # a missing middle slice
    gap = write_dicom_series(_phantom(5), src / "gap", _info("gap"))
    gap[len(gap) // 2].unlink()
    # a truncated file
    trunc = write_dicom_series(_phantom(6), src / "trunc", _info("trunc"))
    data = trunc[7].read_bytes()
    trunc[7].write_bytes(data[: len(data) // 2])
    # a file without pixel data inside a good series (the series itself stays usable)
    nopix = write_dicom_series(_phantom(7), src / "nopix", _info("nopix"))
    ds = pydicom.dcmread(nopix[0])
    del ds.PixelData
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    ds.save_as(src / "nopix" / "header_only.dcm")
    # missing SeriesInstanceUID
    nouid = write_dicom_series(_phantom(8), src / "nouid", _info("nouid"))
    for p in nouid:
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = ""
        ds.save_as(p)
    # junk
    (src / "README.txt").write_text("exported by some PACS")
    (src / "patient1" / "thumbs.db").write_bytes(os.urandom(300))
    # a NIfTI whose header declares a huge size
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.int16)
    (src / "huge.nii").write_bytes(hdr.binaryblock + b"\x00" * 104)
    # a good NIfTI
    nii = _phantom(9)
    write_nifti(nii.hu, nii, src / "nifti" / "scan.nii.gz")
    # a zip with a '../' member and a good series inside
    zip_path = root / "upload.zip"
    zipped = write_dicom_series(_phantom(10), root / "tmp_zip", _info("zip"))
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in zipped:
            zf.write(p, f"series/{p.name}")
        zf.writestr("../../escaped.txt", "should never be written")
    return {
        "root": root,
        "src": src,
        "zip": zip_path,
        "good": good,
        "shuffled": shuffled,
        "nii": nii,
    }


@pytest.fixture(scope="module")
def ingested(
    messy: dict[str, Any], cluster: ClusterConfig, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    store = tmp_path_factory.mktemp("store")
    summary = ingest(
        [str(messy["src"]), str(messy["zip"])],
        store,
        cohort="messy",
        key=KEY,
        cfg=CFG,
        cluster=cluster,
    )
    table = read_catalog(store)
    rows = table.to_pylist()
    return {"store": store, "summary": summary, "rows": rows, "table": table}


def _row(rows: list[dict[str, Any]], path_part: str, status: str | None = None) -> dict[str, Any]:
    hits = [r for r in rows if path_part in (r["source_path"] or "")]
    if status:
        hits = [r for r in hits if r["status"] == status]
    assert len(hits) == 1, (path_part, [(r["source_path"], r["status"]) for r in rows])
    return hits[0]


def test_good_series_are_exact_and_canonical(
    ingested: dict[str, Any], messy: dict[str, Any]
) -> None:
    rows = ingested["rows"]
    for part, phantom in (("good", messy["good"]), ("shuffled", messy["shuffled"])):
        row = _row(rows, part)
        assert row["status"] == "ok", row
        store = open_scan_store(ingested["store"] / row["store_path"])
        ct = store.read("ct")
        np.testing.assert_array_equal(ct, np.maximum(phantom.hu, -1024))
        assert store.spacing_mm == pytest.approx(phantom.spacing_mm)
        assert store.origin_mm == pytest.approx(phantom.origin_mm, abs=1e-3)
        assert row["n_slices"] == phantom.hu.shape[0]
        assert row["patient_sex"] in {"F", "M"} and row["patient_age_years"] == 65
        assert row["manufacturer"] == "SYNTHETIC" and row["kvp"] == pytest.approx(120)
    good, shuffled = _row(rows, "good"), _row(rows, "shuffled")
    assert good["patient_pseudo_id"] == shuffled["patient_pseudo_id"]  # same patient, linked
    assert good["patient_pseudo_id"] == KEY.pseudonym("patient", "SYN-PATIENT-77")


def test_every_bad_input_is_a_row_naming_its_file(ingested: dict[str, Any]) -> None:
    rows = ingested["rows"]
    expect = {
        "gap": "SLICE_INCREMENT_INCONSISTENT",
        "trunc": "PIXELDATA_SHORT",
        "README.txt": "NO_DICM",
        "thumbs.db": "NO_DICM",
        "huge.nii": "SIZE_LIMIT",
        "escaped.txt": "ARCHIVE_UNSAFE_MEMBER",
        "header_only.dcm": "NON_IMAGING",
    }
    for part, reason in expect.items():
        row = _row(rows, part, "rejected")
        assert row["reason"] == reason, row
        assert row["message"], row
    assert "IM00008.dcm" in _row(rows, "trunc", "rejected")["message"]
    assert "IM0002" in _row(rows, "gap", "rejected")["message"]  # the files around the gap
    assert "escaped.txt" in _row(rows, "escaped.txt", "rejected")["message"]


def test_series_that_survive_their_neighbours(ingested: dict[str, Any]) -> None:
    rows = ingested["rows"]
    assert _row(rows, "nopix", "ok")["n_slices"] > 8  # the header-only file did not spoil it
    two = [r for r in rows if (r["source_path"] or "").endswith("two")]
    assert [r["status"] for r in two] == ["ok", "ok"]  # two series in one folder
    assert len({r["scan_id"] for r in two}) == 2
    nouid = _row(rows, "nouid")
    assert nouid["status"] == "ok" and nouid["series_key"] == "geometry"
    assert "SeriesInstanceUID missing" in nouid["message"]
    zipped = _row(rows, "upload.zip!series")
    assert zipped["status"] == "ok"
    nifti = _row(rows, "scan.nii.gz")
    assert nifti["status"] == "ok" and nifti["source_format"] == "nifti"


def test_nothing_written_outside_and_staging_removed(
    ingested: dict[str, Any], messy: dict[str, Any]
) -> None:
    root: Path = messy["root"]
    assert not list(root.parent.rglob("escaped.txt"))
    assert not list(ingested["store"].rglob("escaped.txt"))
    assert not (ingested["store"] / ".staging").exists()
    assert not (ingested["store"] / ".ingest.lock").exists()


def test_catalog_contract_duckdb_and_partitioning(ingested: dict[str, Any]) -> None:
    store = ingested["store"]
    files = list((store / "catalog").glob("cohort=messy/*.parquet"))
    assert len(files) == 1  # compacted
    n, n_ok, n_ids = duckdb.sql(
        f"select count(*), count(*) filter (where status = 'ok'), count(distinct scan_id) "
        f"from read_parquet('{store}/catalog/*/*.parquet', hive_partitioning=true)"
    ).fetchall()[0]
    assert n == n_ids == len(ingested["rows"])
    assert n_ok == 8  # good, shuffled, two x2, nopix, nouid, nifti, zip
    assert ingested["summary"].counts["ok"] == 8
    cohorts = {r["cohort"] for r in ingested["rows"]}
    assert cohorts == {"messy"}
    assert ingested["table"].schema.field("ingested_at").type == pa.timestamp("ms", tz="UTC")


def test_no_identifier_anywhere_in_outputs(ingested: dict[str, Any]) -> None:
    store: Path = ingested["store"]
    for path in store.rglob("*"):
        assert not any(s.lower() in path.name.lower() for s in FAKE_IDENTIFIERS)
        if path.is_file() and (path.suffix in {".parquet", ".json"} or path.name == "zarr.json"):
            blob = path.read_bytes()
            if path.suffix == ".parquet":
                blob = str(pa.parquet.read_table(path).to_pylist()).encode()  # type: ignore[attr-defined]
            for s in FAKE_IDENTIFIERS:
                assert s.encode() not in blob, (s, path)


def test_store_attributes_ngff_and_marker(ingested: dict[str, Any]) -> None:
    row = _row(ingested["rows"], "good")
    store = open_scan_store(ingested["store"] / row["store_path"])
    attrs = store.attrs
    required = {a["name"] for a in load_store_layout()["attributes"] if a["required"]}
    assert required <= set(attrs), required - set(attrs)
    ome = attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["unit"] == "millimeter" for a in ms["axes"])
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx(list(store.spacing_mm))
    assert attrs["ct_sha256"] == row["ct_sha256"]
    assert attrs["scan"]["scan_id"] == row["scan_id"]
    assert len(attrs["direction"]) == 9
    meta = json.loads((store.path / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    ct = json.loads((store.path / "ct" / "zarr.json").read_text())
    assert ct["data_type"] == "int16" and ct["dimension_names"] == ["z", "y", "x"]


def test_rerun_adds_nothing_and_rebuilds_a_crashed_store(
    messy: dict[str, Any], cluster: ClusterConfig, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    src = messy["src"] / "patient1"
    first = ingest([str(src)], store, cohort="c1", key=KEY, cfg=CFG, cluster=cluster)
    assert first.counts["ok"] == 1
    rows1 = read_catalog(store).to_pylist()
    second = ingest([str(src)], store, cohort="c1", key=KEY, cfg=CFG, cluster=cluster)
    assert second.skipped_complete == 1 and second.counts["ok"] == 0
    rows2 = read_catalog(store).to_pylist()
    assert sorted(r["scan_id"] for r in rows2) == sorted(r["scan_id"] for r in rows1)
    # simulate a crash after the rename but before the marker: the store must be rebuilt
    ok = next(r for r in rows2 if r["status"] == "ok")
    marker = store / ok["store_path"] / COMPLETION_MARKER
    marker.unlink()
    with pytest.raises(StoreError, match="completion marker"):
        open_scan_store(store / ok["store_path"])
    third = ingest([str(src)], store, cohort="c1", key=KEY, cfg=CFG, cluster=cluster)
    assert third.counts["ok"] == 1 and marker.exists()
    rows3 = read_catalog(store).to_pylist()
    assert len(rows3) == len(rows1)
    assert {r["ct_sha256"] for r in rows3 if r["ct_sha256"]} == {ok["ct_sha256"]}


def test_key_rules(messy: dict[str, Any], cluster: ClusterConfig, tmp_path: Path) -> None:
    src = str(messy["src"] / "patient1" / "good")
    with pytest.raises(KeyMissingError, match="screening keygen"):
        ingest([src], tmp_path / "s", key=None, cfg=CFG, cluster=cluster)
    ingest([src], tmp_path / "s", key=KEY, cfg=CFG, cluster=cluster)
    other = PseudonymKey(b"another-key-" + b"y" * 32)
    with pytest.raises(ConfigError, match="another pseudonymisation key"):
        ingest([src], tmp_path / "s", key=other, cfg=CFG, cluster=cluster)
    # NIfTI alone needs no key: its id is a content hash
    nifti = str(messy["src"] / "nifti")
    summary = ingest([nifti], tmp_path / "n", key=None, cfg=CFG, cluster=cluster)
    assert summary.counts["ok"] == 1


def test_manifest_masks_site_and_pass_through(
    messy: dict[str, Any], cluster: ClusterConfig, tmp_path: Path
) -> None:
    ph: Phantom = messy["nii"]
    write_nifti(ph.liver_mask.astype(np.uint8), ph, tmp_path / "liver.nii.gz", ("L", "A", "S"))
    write_nifti(ph.spleen_mask.astype(np.uint8), ph, tmp_path / "spleen.nii.gz")
    image = messy["src"] / "nifti" / "scan.nii.gz"
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "image,liver_mask,spleen_mask,site,case_id,patient_id\n"
        f"{image},liver.nii.gz,spleen.nii.gz,site-z,case-42,SYN-PATIENT-77\n"
    )
    specs = read_manifest(manifest, "mcohort")
    store = tmp_path / "store"
    ingest([], store, manifest=specs, key=KEY, cfg=CFG, cluster=cluster)
    (row,) = read_catalog(store).to_pylist()
    assert (row["status"], row["site"], row["case_id"], row["cohort"]) == (
        "ok", "site-z", "case-42", "mcohort"
    )  # fmt: skip
    assert row["patient_pseudo_id"] == KEY.pseudonym("patient", "SYN-PATIENT-77")
    assert "patient_id" not in row
    assert row["has_seg_reference"] is True and row["mask_resampled"] is False
    seg = open_scan_store(store / row["store_path"]).read("seg_reference")
    np.testing.assert_array_equal(seg == 1, ph.liver_mask)
    np.testing.assert_array_equal(seg == 2, ph.spleen_mask & ~ph.liver_mask)
    blob = io.BytesIO()
    pa.parquet.write_table(read_catalog(store), blob)  # type: ignore[attr-defined]
    assert b"SYN-PATIENT-77" not in blob.getvalue()


def test_manifest_problems_are_clear_errors_not_tracebacks(tmp_path: Path) -> None:
    """A manifest saved as cp1252 and one naming an image twice used to crash ingest."""
    accented = tmp_path / "cp1252.csv"
    accented.write_bytes("image,site\nscan1.nii.gz,Hôpital\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text .* save it as UTF-8") as e:
        read_manifest(accented, "c")
    assert "cp1252.csv" in str(e.value)
    twice = tmp_path / "twice.csv"
    twice.write_text("image,site\na/scan1.nii.gz,x\nother.nii.gz,y\n./a/scan1.nii.gz,z\n")
    with pytest.raises(ConfigError, match="lines 2 and 4 name the same image"):
        read_manifest(twice, "c")
    fine = tmp_path / "fine.csv"
    fine.write_text("image,site\nscan1.nii.gz,Hôpital\n", encoding="utf-8")
    assert read_manifest(fine, "c")[0].site == "Hôpital"
