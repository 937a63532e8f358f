"""Result datasets: a part file damaged inside (footer intact) never stops a reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from screening.query import run_query
from screening.schemas import load_table_schema
from screening.tables import compact_dataset, quarantine_corrupt_parts, read_dataset, write_part

FAILURES = load_table_schema("failures")


def _rows(cohort: str, n: int) -> list[dict[str, object]]:
    return [
        {"scan_id": f"{cohort}{i:04d}", "cohort": cohort, "stage": "ingest",
         "reason": "NO_DICM", "message": "x" * 40, "attempt": 1,
         "at": datetime(2026, 12, 5, tzinfo=UTC)}
        for i in range(n)
    ]  # fmt: skip


def _damage_a_page(part: Path) -> None:
    """Flip bytes in the first column chunk; the footer (and so the metadata) stays intact."""
    data = bytearray(part.read_bytes())
    for i in range(8, 40):
        data[i] ^= 0x5A
    part.write_bytes(bytes(data))
    pq.read_metadata(part)  # the footer still parses: a footer check alone would pass it
    with pytest.raises((OSError, pa.ArrowException)):
        pq.read_table(part, page_checksum_verification=True)


def test_damaged_page_is_skipped_quarantined_and_never_deleted(tmp_path: Path) -> None:
    root = tmp_path / "results" / "failures"
    (good,) = write_part(root, FAILURES, _rows("a", 5))
    (bad,) = write_part(root, FAILURES, _rows("b", 7))
    _damage_a_page(bad)

    table = read_dataset(root, FAILURES)  # the readable rows, no exception
    assert sorted(table["scan_id"].to_pylist()) == [f"a{i:04d}" for i in range(5)]

    # The query sandbox reads through the same path.
    out = run_query(tmp_path / "results", "select count(*) as n from failures")
    assert out.column("n").to_pylist() == [5]

    compact_dataset(root, FAILURES, key="scan_id", order_by="attempt")
    assert bad.is_file(), "compaction must not delete a file it could not read"
    assert good.exists() or len(list(root.glob("*/*.parquet"))) == 2

    moved = quarantine_corrupt_parts(root, tmp_path / "quarantine")
    assert [p.name for p in moved] == [bad.name] and not bad.exists()
    assert read_dataset(root, FAILURES).num_rows == 5
