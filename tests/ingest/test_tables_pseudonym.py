"""Atomic Parquet parts, compaction to the latest row per key, and keyed pseudonyms."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from screening.errors import ConfigError
from screening.ingest.pseudonym import PseudonymKey, generate_key_file, load_key, scan_pseudonym
from screening.schemas import load_table_schema
from screening.tables import compact_dataset, read_dataset, write_part

SCANS = load_table_schema("scans")


def _row(scan_id: str, cohort: str, minute: int, status: str = "ok") -> dict[str, object]:
    return {
        "scan_id": scan_id,
        "cohort": cohort,
        "status": status,
        "engine_version": "0",
        "ingested_at": dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.UTC),
        "case_id": f"case-{scan_id}",
    }


def test_parts_are_hive_partitioned_and_compaction_keeps_latest(tmp_path: Path) -> None:
    root = tmp_path / "catalog"
    write_part(root, SCANS, [_row("a", "c1", 1, "failed"), _row("b", "c1", 1), _row("c", "c2", 1)])
    write_part(root, SCANS, [_row("a", "c1", 5), _row("c", "c2", 0, "rejected")])
    assert read_dataset(root, SCANS).num_rows == 5
    assert not list(root.rglob(".*.tmp"))
    dropped = compact_dataset(root, SCANS, key="scan_id", order_by="ingested_at")
    assert dropped == 2
    rows = {r["scan_id"]: r for r in read_dataset(root, SCANS).to_pylist()}
    assert rows["a"]["status"] == "ok"  # the later retry wins
    assert rows["c"]["status"] == "ok"  # an older row does not win over a newer one
    assert rows["b"]["case_id"] == "case-b"  # pass-through column survives
    assert sorted(p.parent.name for p in root.glob("*/*.parquet")) == ["cohort=c1", "cohort=c2"]
    assert compact_dataset(root, SCANS, key="scan_id", order_by="ingested_at") == 0


def test_bad_cohort_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder name"):
        write_part(tmp_path, SCANS, [_row("a", "../evil", 1)])


def test_key_file_round_trip_and_pseudonyms(tmp_path: Path) -> None:
    path = generate_key_file(tmp_path / "k")
    key = load_key(path)
    assert key is not None and key == load_key(None, path.read_text())
    assert key.secret.decode() not in repr(key)
    a = key.pseudonym("patient", "123")
    assert a == key.pseudonym("patient", "123") and len(a) == 64
    assert a != key.pseudonym("patient", "1234") and a != key.pseudonym("series", "123")
    assert a != PseudonymKey(b"z" * 40).pseudonym("patient", "123")
    assert scan_pseudonym(None, "nifti", "abc") != scan_pseudonym(key, "nifti", "abc")
    with pytest.raises(ConfigError, match="at least"):
        PseudonymKey(b"short")
    assert load_key(None, None) is None
