"""Hive-partitioned Parquet datasets written atomically (the scans catalog, results tables).

Layout: ``ROOT/<partition>=<value>/part-<token>.parquet``. Every part file is written under a
hidden temporary name and renamed into place, so readers (DuckDB, pyarrow, pandas) never see a
half-written file. Readers ignore hidden files. The partition column is not stored inside the
files (hive convention); :func:`read_dataset` restores it.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from screening.config import require
from screening.schemas import TableSchema

__all__ = [
    "PARTITION_VALUE_PATTERN",
    "compact_dataset",
    "quarantine_corrupt_parts",
    "read_dataset",
    "write_part",
]

log = logging.getLogger(__name__)

#: Partition values become folder names: keep them portable and unambiguous.
PARTITION_VALUE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_partition_value(value: str, column: str) -> str:
    require(
        bool(PARTITION_VALUE_PATTERN.match(value)),
        f"{column} {value!r} cannot be a folder name; use letters, digits, '.', '_' or '-' "
        "(up to 128, starting with a letter or digit)",
    )
    return value


def _part_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*=*/*.parquet") if not p.name.startswith("."))


def _load_part(path: Path) -> pa.Table | None:
    """A part file read whole, its page checksums verified; None when any of it cannot be
    read: a footer lost to a crash mid-copy, or a damaged data page behind an intact footer
    (which a footer check alone would pass, and a later reader would crash on)."""
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        log.warning("unreadable Parquet part %s: %s", path, e)
        return None


def quarantine_corrupt_parts(
    root: str | os.PathLike[str], quarantine: str | os.PathLike[str]
) -> list[Path]:
    """Move part files that cannot be read whole (truncated by a crash on a filesystem without
    atomic rename, a damaged page) out of the dataset into ``quarantine``; return their new
    paths. What they held no longer counts as committed, so a resumed run redoes those scans."""
    moved = []
    for f in _part_files(Path(root)):
        if _load_part(f) is not None:
            continue
        dest = Path(quarantine) / f.parent.name / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
        log.warning("moved an unreadable Parquet part out of the dataset: %s -> %s", f, dest)
        moved.append(dest)
    return moved


def write_part(
    root: str | os.PathLike[str],
    schema: TableSchema,
    rows: Iterable[Mapping[str, Any]],
    partition: str = "cohort",
    prefix: str = "part",
) -> list[Path]:
    """Conform ``rows`` to ``schema`` and write one part file per partition value, atomically."""
    table = schema.conform(rows)
    if table.num_rows == 0:
        return []
    written = []
    for value in pc.unique(table[partition]).to_pylist():
        check_partition_value(str(value), partition)
        part = table.filter(pc.equal(table[partition], value)).drop_columns([partition])
        folder = Path(root) / f"{partition}={value}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{prefix}-{uuid.uuid4().hex}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            pq.write_table(part, tmp, compression="zstd", write_page_checksum=True)
            os.replace(tmp, folder / name)
        except BaseException:  # disk full, killed: leave no half file taking space
            tmp.unlink(missing_ok=True)
            raise
        written.append(folder / name)
    return written


def _read_files(
    files: list[Path], schema: TableSchema, partition: str
) -> tuple[pa.Table, list[Path]]:
    """The rows of every readable part, and which files they came from (unreadable parts are
    skipped with a warning, never fatal: one damaged file must not stop query, stats or a run)."""
    arrow = schema.to_arrow()
    tables, read = [], []
    for f in files:
        t = _load_part(f)
        if t is None:
            continue
        value = f.parent.name.split("=", 1)[1]
        t = t.append_column(partition, pa.array([value] * t.num_rows, pa.string()))
        # Extra (pass-through) columns are kept; known columns get their contract types.
        cols = {name: t[name] for name in t.column_names}
        for field in arrow:
            cols[field.name] = (
                cols[field.name].cast(field.type)
                if field.name in cols
                else pa.nulls(t.num_rows, field.type)
            )
        tables.append(pa.table(cols))
        read.append(f)
    if not tables:
        return arrow.empty_table(), read
    return pa.concat_tables(tables, promote_options="permissive"), read


def read_dataset(
    root: str | os.PathLike[str], schema: TableSchema, partition: str = "cohort"
) -> pa.Table:
    """All rows of a dataset (empty table with the contract's schema when there is none)."""
    return _read_files(_part_files(Path(root)), schema, partition)[0]


def compact_dataset(
    root: str | os.PathLike[str],
    schema: TableSchema,
    key: str | Sequence[str],
    order_by: str,
    partition: str = "cohort",
) -> int:
    """Keep only the latest row (largest ``order_by``) per ``key`` across the whole dataset and
    rewrite each partition as one file. Returns the number of rows dropped.

    Each new file is complete before any old one is removed; a crash in between leaves
    duplicates that the next compaction removes, never a lost row.
    """
    table, files = _read_files(_part_files(Path(root)), schema, partition)
    if not files:  # only files read whole are rewritten and removed: never delete evidence
        return 0
    keys = [key] if isinstance(key, str) else list(key)
    n_before = table.num_rows
    # Python, not a join: null key values must group together, not vanish.
    order = table[order_by].to_pylist()
    best: dict[tuple[Any, ...], int] = {}
    for i, k in enumerate(zip(*(table[c].to_pylist() for c in keys), strict=True)):
        j = best.get(k)
        # Latest wins; ties go to the row written last; a null order_by never beats a value.
        if j is None or order[j] is None or (order[i] is not None and order[i] >= order[j]):
            best[k] = i
    table = table.take(pa.array(sorted(best.values()), pa.int64()))
    dropped = n_before - table.num_rows
    if dropped == 0 and len({f.parent for f in files}) == len(files):
        return 0
    rows = table.to_pylist()
    write_part(root, schema, rows, partition=partition, prefix="compact")
    for f in files:
        f.unlink(missing_ok=True)
    return dropped
