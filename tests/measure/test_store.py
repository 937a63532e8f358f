"""The store wrapper and `screening measure`: ingest → seg_reference → Parquet + overlays.

Real components: NIfTI files ingested on a real local Dask cluster, zarr scan stores, Parquet
read back by DuckDB, PNG decoded by Pillow.
"""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

from screening.cli import main
from screening.ingest import ingest, read_manifest
from screening.measure import MeasureConfig, measure_pipeline_id, measure_store, measure_stores
from screening.measure.overlay import render_overlay
from screening.measure.volume import measure_volume
from screening.reasons import Segmenter
from screening.runtime import ClusterConfig
from screening.store.scan import StoreConfig, open_scan_store, write_scan_store
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.writers import write_nifti

EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
NUMERIC = (
    "liver_volume_ml",
    "liver_hu_3d",
    "liver_hu_3d_median",
    "liver_hu_3d_std",
    "liver_hu_3d_eroded",
    "liver_hu_2d",
    "liver_2d_slice_index",
    "liver_hu_roi",
    "spleen_volume_ml",
    "spleen_hu_3d",
    "liver_spleen_ratio",
    "pdff_est_pct",
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, cluster: ClusterConfig) -> Path:
    """One steatotic patient written twice with opposite axis orders (image RAS + masks LPI,
    and image LPI + masks RAS), and a normal patient; masks given in a manifest."""
    root = tmp_path_factory.mktemp("measure-store")
    fatty = make_phantom(PhantomSpec(liver_hu=28.0), ScanGeometry.preset("small"), seed=31)
    normal = make_phantom(PhantomSpec(liver_hu=60.0), ScanGeometry.preset("small"), seed=32)
    rows = []
    for name, ph, image_codes, mask_codes in [
        ("fatty-ras", fatty, ("R", "A", "S"), ("L", "P", "I")),
        ("fatty-lpi", fatty, ("L", "P", "I"), ("R", "A", "S")),
        ("normal", normal, ("R", "A", "S"), ("R", "A", "S")),
    ]:
        image = write_nifti(ph.hu, ph, root / "src" / f"{name}.nii.gz", image_codes)
        liver = write_nifti(
            ph.liver_mask.astype(np.uint8), ph, root / "src" / f"{name}-liver.nii.gz", mask_codes
        )
        spleen = write_nifti(
            ph.spleen_mask.astype(np.uint8), ph, root / "src" / f"{name}-spleen.nii.gz", mask_codes
        )
        rows.append([image, liver, spleen, name])  # fmt: skip
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "liver_mask", "spleen_mask", "case_id"])
        w.writerows(rows)
    ingest([], root / "store", manifest=read_manifest(manifest, "trial"), cluster=cluster)
    return root / "store"


def _by_case(results: Path, store: Path) -> dict[str, dict]:
    con = duckdb.connect()
    rows = con.sql(
        f"""select s.case_id, m.* from read_parquet('{results}/measurements/*/*.parquet',
                hive_partitioning = true) m
            join read_parquet('{store}/catalog/*/*.parquet', hive_partitioning = true) s
            using (scan_id)"""
    )
    return {
        r["case_id"]: r for r in (dict(zip(rows.columns, t, strict=True)) for t in rows.fetchall())
    }


def test_flipped_source_orientation_gives_identical_results(store: Path, tmp_path: Path):
    summary = measure_stores(store, tmp_path, MeasureConfig(), segmenter=Segmenter.REFERENCE)
    assert summary.by_status == {"ok": 3}
    rows = _by_case(tmp_path, store)
    a, b = rows["fatty-ras"], rows["fatty-lpi"]
    assert a["scan_id"] != b["scan_id"]
    for col in NUMERIC:
        assert a[col] == b[col], col
    assert a["roi_hu"] == b["roi_hu"] and a["qc_flags"] == b["qc_flags"] == []
    assert (a["steatosis_3d"], a["steatosis_roi"], rows["normal"]["steatosis_roi"]) == (
        True,
        True,
        False,
    )
    assert a["segmenter"] == "reference" and a["model_id"] is None
    assert a["cohort"] == "trial" and a["measure_grid"] == "native"


def test_cli_writes_parquet_and_overlays_and_skips_on_rerun(store: Path, tmp_path: Path, capsys):
    results = tmp_path / "results"
    argv = ["measure", str(store), "--out", str(results), "--segmenter", "reference", "--quiet"]
    assert main(argv) == 0
    assert "3 ok" in capsys.readouterr().out
    rows = _by_case(results, store)
    for row in rows.values():
        png = results / row["overlay_file"]
        with Image.open(png) as img:
            img.load()
            pixels = np.asarray(img.convert("RGB"))
        assert img.format == "PNG" and img.width >= 600
        liver_green = (pixels == (40, 230, 40)).all(axis=2).sum()
        roi_yellow = (pixels == (255, 225, 0)).all(axis=2).sum()
        assert liver_green > 100 and roi_yellow > 20
        assert row["measured_at"] is not None and row["measure_s"] > 0
    # the same command again: nothing new, no duplicate rows
    assert main(argv) == 0
    assert "3 already done" in capsys.readouterr().out
    n = duckdb.sql(f"select count(*) from read_parquet('{results}/measurements/*/*.parquet')")
    assert n.fetchall()[0][0] == 3
    # another setting is another pipeline: new rows beside the old ones
    assert main([*argv, "--threshold-hu", "38", "--no-overlays"]) == 0
    ids = duckdb.sql(
        f"select count(distinct pipeline_id) from "
        f"read_parquet('{results}/measurements/*/*.parquet')"
    )
    assert ids.fetchall()[0][0] == 2


def test_missing_segmentation_is_a_failed_row_not_a_stop(store: Path, tmp_path: Path):
    summary = measure_stores(store, tmp_path, MeasureConfig(), segmenter=Segmenter.UNET)
    assert summary.by_status == {"failed": 3}
    assert summary.by_reason == {"NO_SEGMENTATION": 3}
    rows = _by_case(tmp_path, store)
    assert all(
        r["status"] == "failed" and "screening segment" in r["message"] for r in rows.values()
    )
    pid = measure_pipeline_id(None, Segmenter.UNET, MeasureConfig())  # no seg, so no model
    assert {r["pipeline_id"] for r in rows.values()} == {pid}
    with pytest.raises(Exception, match="no `seg`"):
        measure_store(next((store / "scans").glob("*.zarr")), MeasureConfig())


def test_contrast_header_in_the_store_withholds_decisions(tmp_path: Path):
    from screening.store.volume import ScanVolume

    ph = make_phantom(PhantomSpec(liver_hu=25.0), ScanGeometry.preset("small"), seed=33)
    volume = ScanVolume(ph.hu, ph.spacing_mm, ph.origin_mm, EYE, {"format": "synthetic"})
    attrs = {"scan_id": "s1", "cohort": "c", "contrast_header": True}
    path = write_scan_store(tmp_path, "s1", volume, attrs, StoreConfig(), ph.labels)
    row = measure_store(path, MeasureConfig(), segmenter=Segmenter.REFERENCE)
    assert row["reason"] == "CONTRAST_HEADER" and row["contrast_suspected"] is True
    assert row["steatosis_3d"] is None and row["steatosis_grade"] is None
    assert row["liver_hu_3d"] == pytest.approx(25.0, abs=3.0)


def test_overlay_requires_geometry_and_marks_every_roi():
    ph = make_phantom(PhantomSpec(liver_hu=30.0), ScanGeometry.preset("small"), seed=34)
    m = measure_volume(ph.hu, ph.labels, ph.spacing_mm, MeasureConfig())
    png = render_overlay(ph.hu, m, head="scan abc")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import io

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert (pixels == (255, 140, 0)).all(axis=2).sum() > 20  # neighbour ROIs drawn
    assert (pixels == (70, 150, 255)).all(axis=2).sum() > 20  # spleen outline


@pytest.mark.real_data
def test_totalsegmentator_patient_a_with_its_masks(
    real_data: Path, cluster: ClusterConfig, tmp_path: Path
):
    """README: eroded medians liver ≈ 47, spleen ≈ 35 HU, L/S ≈ 1.34; not steatotic."""
    ts = real_data / "totalsegmentator-example"
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "liver_mask", "spleen_mask"])
        seg = ts / "example_seg"
        w.writerow([ts / "example_ct.nii.gz", seg / "liver.nii.gz", seg / "spleen.nii.gz"])
    ingest([], tmp_path / "store", manifest=read_manifest(manifest, "ts"), cluster=cluster)
    path = next((tmp_path / "store" / "scans").glob("*.zarr"))
    row = measure_store(path, MeasureConfig(), segmenter=Segmenter.REFERENCE, results_dir=tmp_path)
    assert row["status"] == "ok"
    assert row["liver_hu_3d_eroded_median"] == pytest.approx(47, abs=1.5)
    assert row["spleen_hu_3d_median"] == pytest.approx(35, abs=1.5)
    assert row["liver_spleen_ratio"] == pytest.approx(1.34, abs=0.05)
    for method in ("steatosis_3d", "steatosis_2d", "steatosis_roi", "steatosis_ls"):
        assert row[method] is False, method
    assert row["contrast_suspected"] is False
    assert "ORIENTATION_SUSPECT" not in row["qc_flags"]
    assert "LIVER_VOLUME_IMPLAUSIBLE" not in row["qc_flags"]
    assert row["liver_volume_ml"] == pytest.approx(1123, rel=0.02)
    assert (tmp_path / row["overlay_file"]).is_file()
    assert open_scan_store(path).has("seg_reference")
