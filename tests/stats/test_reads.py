"""Reference reads: CSV and Parquet inputs, key detection and mapping, and every error."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from screening.errors import ConfigError
from screening.schemas import load_table_schema
from screening.stats.reads import load_reference_reads, normalize_reference_reads

SCANS = pa.table(
    {
        "scan_id": ["s-a", "s-b", "s-c", "s-x"],
        "case_id": ["0001", "0002", "0003", "0002"],
        "site": ["site-a", "site-a", "site-b", "site-a"],
        "status": ["ok", "ok", "ok", "rejected"],  # s-x: a rejected second series of 0002
    }
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_keyed_by_scan_id(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "reads.csv",
        "scan_id,reader,roi_hu,label,grade\n"
        "s-a,R1,38.5,true,mild\n"
        "s-a,R2, 41 ,0,\n"
        "s-b,R1,,yes,none\n",
    )
    out = load_reference_reads(f)
    assert out.column_names[:3] == ["scan_id", "reader", "roi_hu"]
    assert out["scan_id"].to_pylist() == ["s-a", "s-a", "s-b"]
    assert out["reader"].to_pylist() == ["R1", "R2", "R1"]
    assert out["roi_hu"].type == pa.float64()
    assert out["roi_hu"].to_pylist() == [38.5, 41.0, None]  # an empty cell is a missing read
    assert out["label"].to_pylist() == [True, False, True]
    assert out["grade"].to_pylist() == ["mild", None, "none"]
    load_table_schema("reference_reads").validate(out)
    assert out.schema.metadata[b"screening.schema"] == b"reference_reads"


def test_csv_keyed_by_case_id_is_mapped_through_the_scans_table(tmp_path: Path) -> None:
    # The reads share case_id and site with the scans: case_id is preferred as the key, and
    # case 0002 maps to its ok scan, not the rejected series.
    f = tmp_path / "reads.csv.gz"
    with gzip.open(f, "wt", encoding="utf-8") as fh:
        fh.write("case_id,site,reader,roi_hu\n0001,site-a,R1,50.2\n0002,site-a,R1,33.0\n")
    out = load_reference_reads(f, SCANS)
    assert out["scan_id"].to_pylist() == ["s-a", "s-b"]
    assert out["case_id"].to_pylist() == ["0001", "0002"]  # leading zeros kept
    assert out["site"].to_pylist() == ["site-a", "site-a"]
    assert out["roi_hu"].to_pylist() == [50.2, 33.0]


def test_a_single_shared_column_is_found_automatically() -> None:
    scans = pa.table({"scan_id": ["s1", "s2"], "accession_pseudo": ["p1", "p2"]})
    reads = pa.table({"accession_pseudo": ["p2"], "reader": ["R1"], "roi_hu": [45.0]})
    out = normalize_reference_reads(reads, scans)
    assert out["scan_id"].to_pylist() == ["s2"]


def test_parquet_input_with_typed_optional_columns(tmp_path: Path) -> None:
    f = tmp_path / "reads.parquet"
    pq.write_table(
        pa.table(
            {
                "case_id": [1, 3],  # integers match the scans' text keys after formatting
                "reader": ["R1", "R1"],
                "roi_hu": [float("nan"), 61.5],
                "label": [True, False],
                "mri_pdff_pct": [12.5, 3.0],
                "biopsy_grade": [2, 0],
            }
        ),
        f,
    )
    scans = pa.table({"scan_id": ["s-1", "s-3"], "case_id": ["1", "3"]})
    out = load_reference_reads(f, scans)
    assert out["scan_id"].to_pylist() == ["s-1", "s-3"]
    assert out["roi_hu"].to_pylist() == [None, 61.5]  # NaN is a missing read
    assert out["biopsy_grade"].type == pa.int8() and out["biopsy_grade"].to_pylist() == [2, 0]
    assert out["mri_pdff_pct"].to_pylist() == [12.5, 3.0]
    assert out["label"].to_pylist() == [True, False]


def test_reads_of_unknown_scans_are_dropped_with_a_count(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "reads.csv",
        "case_id,reader,roi_hu\n0001,R1,40\n0009,R1,41\n0009,R2,42\n0010,R1,43\n",
    )
    with pytest.warns(UserWarning, match=r"3 of 4 reads \(2 case_id value\(s\)"):
        out = load_reference_reads(f, SCANS)
    assert out["scan_id"].to_pylist() == ["s-a"]
    by_id = _write(tmp_path / "ids.csv", "scan_id,reader,roi_hu\ns-a,R1,40\nnope,R1,41\n")
    with pytest.warns(UserWarning, match="1 of 2 reads"):
        assert load_reference_reads(by_id, SCANS).num_rows == 1


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ("scan_id,roi_hu", r"lack column\(s\) \['reader'\]"),
        ("scan_id,reader,ROI_HU", r"rename 'ROI_HU' -> 'roi_hu'"),
    ],
)
def test_missing_reader_or_roi_column(tmp_path: Path, header: str, match: str) -> None:
    f = _write(tmp_path / "r.csv", f"{header}\n" + ",".join(["x"] * len(header.split(","))))
    with pytest.raises(ConfigError, match=match) as err:
        load_reference_reads(f)
    assert "received" in str(err.value) and str(f) in str(err.value)


def test_no_usable_key(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.csv", "patient,reader,roi_hu\np1,R1,40\n")
    with pytest.raises(ConfigError, match="no scans table was given"):
        load_reference_reads(f)
    with pytest.raises(ConfigError, match="share no column with the scans table"):
        load_reference_reads(f, SCANS)


def test_ambiguous_key_lists_the_shared_columns() -> None:
    scans = pa.table({"scan_id": ["s1"], "site": ["a"], "series_key": ["k"]})
    reads = pa.table({"site": ["a"], "series_key": ["k"], "reader": ["R1"], "roi_hu": [40.0]})
    with pytest.raises(ConfigError, match=r"ambiguous key.*\['site', 'series_key'\]"):
        normalize_reference_reads(reads, scans)


def test_a_key_naming_several_usable_scans_is_an_error() -> None:
    scans = pa.table({"scan_id": ["s1", "s2"], "case_id": ["c1", "c1"]})
    reads = pa.table({"case_id": ["c1"], "reader": ["R1"], "roi_hu": [40.0]})
    with pytest.raises(ConfigError, match=r"1 case_id value\(s\) match several scans.*'c1'"):
        normalize_reference_reads(reads, scans)


def test_duplicate_key_reader_rows_are_named(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "r.csv",
        "scan_id,reader,roi_hu\ns-a,R1,40\ns-b,R1,41\ns-a,R1,39\ns-a,R2,40\n",
    )
    with pytest.raises(
        ConfigError, match=r"1 duplicate \(scan_id, reader\).*'s-a', 'R1'.*file line\(s\) 2, 4"
    ):
        load_reference_reads(f)


def test_two_keys_mapping_to_one_scan_are_duplicates() -> None:
    scans = pa.table({"scan_id": ["s1", "s1"], "case_id": ["c1", "c1-old"]})
    reads = pa.table({"case_id": ["c1", "c1-old"], "reader": ["R1", "R1"], "roi_hu": [40.0, 41]})
    with pytest.raises(ConfigError, match=r"duplicate \(scan_id, reader\)"):
        normalize_reference_reads(reads, scans)


def test_non_numeric_roi_names_the_rows(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "r.csv",
        "scan_id,reader,roi_hu\ns-a,R1,40\ns-b,R1,forty\ns-c,R1,NA\ns-a,R2,12..5\n",
    )
    with pytest.raises(ConfigError, match=r"'roi_hu' holds 2 .*file line\(s\) 3, 5.*'forty'"):
        load_reference_reads(f)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("label", "maybe", "'label' holds 1 value"),
        ("biopsy_grade", "2.5", "'biopsy_grade' holds 1 value"),
        ("biopsy_grade", "4", "integer grades 0-3"),
        ("pdff_pct", "inf", "'pdff_pct' holds 1 value"),
    ],
)
def test_bad_optional_values_name_the_rows(
    tmp_path: Path, column: str, value: str, match: str
) -> None:
    f = _write(tmp_path / "r.csv", f"scan_id,reader,roi_hu,{column}\ns-a,R1,40,{value}\n")
    with pytest.raises(ConfigError, match=match):
        load_reference_reads(f)


def test_empty_reader_or_key_cells_are_errors(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.csv", "scan_id,reader,roi_hu\ns-a,R1,40\ns-b,,41\n")
    with pytest.raises(ConfigError, match=r"'reader' is empty at file line\(s\) 3"):
        load_reference_reads(f)
    g = _write(tmp_path / "g.csv", "scan_id,reader,roi_hu\n,R1,40\n")
    with pytest.raises(ConfigError, match=r"'scan_id' is empty at file line\(s\) 2"):
        load_reference_reads(g)


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_reference_reads(tmp_path / "absent.csv")
    with pytest.raises(ConfigError, match="unknown extension"):
        load_reference_reads(_write(tmp_path / "reads.xlsx", "x"))
    with pytest.raises(ConfigError, match="empty"):
        load_reference_reads(_write(tmp_path / "empty.csv", ""))
    ragged = _write(tmp_path / "ragged.csv", "scan_id,reader,roi_hu\ns-a,R1,40,extra\n")
    with pytest.raises(ConfigError, match=r"file line\(s\) 2 with a wrong count"):
        load_reference_reads(ragged)
    with pytest.raises(ConfigError, match="cannot read"):
        load_reference_reads(_write(tmp_path / "broken.parquet", "not parquet"))


def test_missing_values_stay_null_not_nan(tmp_path: Path) -> None:
    f = _write(tmp_path / "r.csv", "scan_id,reader,roi_hu,pdff_pct\ns-a,R1,nan,\ns-b,R1,40,5\n")
    out = load_reference_reads(f)
    assert out["roi_hu"].null_count == 1 and out["pdff_pct"].null_count == 1
    assert not any(isinstance(v, float) and math.isnan(v) for v in out["roi_hu"].to_pylist())


def test_rows_are_named_by_file_line_or_table_row(tmp_path: Path) -> None:
    # A blank line does not shift the line numbers of the rows after it.
    f = _write(tmp_path / "r.csv", "scan_id,reader,roi_hu\ns-a,R1,40\n\ns-b,R1,x\n")
    with pytest.raises(ConfigError, match=r"file line\(s\) 4: 'x'"):
        load_reference_reads(f)
    table = pa.table({"scan_id": ["s-a", "s-b"], "reader": ["R1", "R1"], "roi_hu": ["40", "x"]})
    with pytest.raises(ConfigError, match=r"row\(s\) 2 \(1-based\)"):
        normalize_reference_reads(table)


def test_scans_table_without_scan_id_is_an_error() -> None:
    reads = pa.table({"case_id": ["c1"], "reader": ["R1"], "roi_hu": [40.0]})
    with pytest.raises(ConfigError, match="scans table has no scan_id column"):
        normalize_reference_reads(reads, pa.table({"case_id": ["c1"]}))
