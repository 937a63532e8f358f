"""The data contracts in schemas/ against the code and against docs/data-contracts.md."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from screening import reasons
from screening.errors import SchemaMismatchError
from screening.schemas import (
    load_categories,
    load_store_layout,
    load_table_schema,
    parse_arrow_type,
    table_names,
)

REPO = Path(__file__).resolve().parent.parent

# Columns docs/data-contracts.md names for each table (the fixed contract analysts rely on).
DESIGN_COLUMNS = {
    "scans": """scan_id patient_pseudo_id cohort site source_format manufacturer model kvp
        convolution_kernel slice_thickness_mm n_slices spacing_z_mm spacing_y_mm spacing_x_mm
        patient_sex patient_age_years contrast_header status reason message""",
    "measurements": """scan_id pipeline_id model_id segmenter cohort liver_volume_ml liver_hu_3d
        liver_hu_3d_median liver_hu_3d_std liver_hu_2d liver_hu_roi roi_hu spleen_volume_ml
        spleen_hu_3d liver_spleen_ratio liver_minus_spleen_hu pdff_est_pct steatosis_grade
        steatosis_3d steatosis_2d steatosis_roi liver_truncated contrast_suspected qc_flags
        status reason device engine_version""",
    "failures": "scan_id stage reason message attempt worker at",
    "reference_reads": "scan_id reader roi_hu label",
}

ENUM_FOR_CATEGORY = {
    "reason": reasons.ReasonCode,
    "status": reasons.Status,
    "source_format": reasons.SourceFormat,
    "stage": reasons.Stage,
    "steatosis_grade": reasons.SteatosisGrade,
    "contrast_phase": reasons.ContrastPhase,
    "segmenter": reasons.Segmenter,
}

UNIT_SUFFIX = {"HU": "hu", "mm": "_mm", "ml": "_ml", "s": "_s", "years": "_years", "%": "_pct"}


def test_expected_tables_are_shipped():
    assert set(table_names()) >= {"scans", "measurements", "failures", "reference_reads"}


@pytest.mark.parametrize("table", sorted(DESIGN_COLUMNS))
def test_design_columns_present(table):
    names = set(load_table_schema(table).names)
    missing = set(DESIGN_COLUMNS[table].split()) - names
    assert not missing, f"{table} lacks data-contract columns {sorted(missing)}"


@pytest.mark.parametrize("category", sorted(ENUM_FOR_CATEGORY))
def test_categories_match_enums(category):
    enum_values = [m.value for m in ENUM_FOR_CATEGORY[category]]
    assert list(load_categories()[category]) == enum_values


def test_design_reason_codes_exist():
    design = [
        "NO_DICM",
        "PIXELDATA_SHORT",
        "CODEC_UNAVAILABLE",
        "MISSING_SERIES_UID",
        "TOO_FEW_SLICES",
        "LOCALIZER",
        "SLICE_INCREMENT_INCONSISTENT",
        "IMAGE_ORIENTATION_INCONSISTENT",
        "NOT_A_VOLUME",
        "GANTRY_TILT",
        "NON_IMAGING",
        "RESCALE_INCOMPLETE",
        "SIZE_LIMIT",
        "CONTRAST_HEADER",
        "CONTRAST_IMAGE",
        "NO_LIVER",
        "LIVER_TRUNCATED",
        "ORIENTATION_SUSPECT",
        "WORKER_LOST",
    ]
    assert set(design) <= {r.value for r in reasons.ReasonCode}


@pytest.mark.parametrize("table", table_names())
def test_schema_well_formed(table):
    schema = load_table_schema(table)
    arrow = schema.to_arrow()
    assert arrow.names == schema.names
    assert len(set(schema.names)) == len(schema.names), "duplicate column"
    assert arrow.metadata[b"screening.schema"] == table.encode()
    for col in schema.columns:
        assert col.name == col.name.lower() and " " not in col.name
        assert col.description, f"{table}.{col.name} has no description"
        if col.category:
            assert col.category in load_categories(), col.category
        if col.unit in UNIT_SUFFIX:
            assert UNIT_SUFFIX[col.unit] in col.name, (
                f"{table}.{col.name}: unit {col.unit} not in name"
            )
    for key in (*schema.key, *schema.partitioning):
        assert key in schema.names


def test_parse_arrow_type():
    assert parse_arrow_type("list<float64>") == pa.list_(pa.float64())
    assert parse_arrow_type("timestamp[ms, tz=UTC]") == pa.timestamp("ms", tz="UTC")
    assert parse_arrow_type("int16") == pa.int16()
    with pytest.raises(SchemaMismatchError, match="unknown Arrow type"):
        parse_arrow_type("complex128")


def _failure_row(**overrides):
    row = {
        "scan_id": "abc",
        "pipeline_id": "p1",
        "cohort": "c",
        "stage": "ingest",
        "reason": "TOO_FEW_SLICES",
        "message": "3 slices in series/x",
        "attempt": 1,
        "worker": "tcp://w",
        "at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    row.update(overrides)
    return row


def test_conform_writes_parquet_readable_by_pyarrow_and_duckdb(tmp_path):
    schema = load_table_schema("failures")
    table = schema.conform([_failure_row(), _failure_row(scan_id="def", attempt=2)])
    path = tmp_path / "failures.parquet"
    pq.write_table(table, path)
    back = pq.read_table(path)
    schema.validate(back)
    assert back.schema.metadata[b"screening.schema_version"] == str(schema.version).encode()
    assert back.schema.field("attempt").type == pa.int32()
    count = duckdb.sql(f"select sum(attempt) from '{path}' where reason = 'TOO_FEW_SLICES'")
    assert count.fetchall()[0][0] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["reason"]), "missing column 'reason'"),
        (lambda t: t.set_column(6, "attempt", pa.array([1.0], pa.float64())), "has type double"),
        (lambda t: t.append_column("patient_name", pa.array(["X"])), "unexpected column"),
        (lambda t: t.set_column(4, "reason", pa.array(["NOT_A_CODE"])), "outside reason"),
        (lambda t: t.set_column(0, "scan_id", pa.array([None], pa.string())), "null"),
    ],
)
def test_validate_reports_each_kind_of_drift(change, message):
    schema = load_table_schema("failures")
    good = schema.conform([_failure_row()])
    with pytest.raises(SchemaMismatchError, match=message):
        schema.validate(change(good))


def test_conform_rejects_unknown_keys_unless_extra_allowed():
    with pytest.raises(SchemaMismatchError, match="unknown keys"):
        load_table_schema("failures").conform([_failure_row(case_id="x")])
    reads = load_table_schema("reference_reads").conform(
        [{"case_id": "case-1", "reader": "R1", "roi_hu": 51.5}]
    )
    assert reads.column("case_id").to_pylist() == ["case-1"]


def test_store_layout_is_consistent():
    layout = load_store_layout()
    assert layout["zarr_format"] == 3
    names = {a["name"] for a in layout["arrays"]}
    assert names == {"ct", "prep", "seg", "seg_reference"}
    for array in layout["arrays"]:
        np.dtype(array["dtype"])  # a valid numpy dtype
        assert array["dims"] == ["z", "y", "x"]
    seg = next(a for a in layout["arrays"] if a["name"] == "seg")
    assert seg["labels"] == {0: "background", 1: "liver", 2: "spleen"}
    assert {a["name"] for a in layout["attributes"]} >= {"spacing_mm", "origin_mm", "ct_sha256"}


def test_built_wheel_contains_the_schemas(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("screening-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {Path(n).name for n in zf.namelist() if n.startswith("screening/_schemas/")}
    on_disk = {p.name for p in (REPO / "schemas").glob("*.yaml")}
    assert on_disk and shipped == on_disk
