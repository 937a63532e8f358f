"""Hive-partitioned Parquet datasets written atomically (the scans catalog, results tables),
on a local disk or in an object store (:class:`~screening.location.Location`).

Layout: ``ROOT/<partition>=<value>/part-<token>.parquet``. Every part file is written once under
a unique name and in one piece (a temporary sibling renamed into place on a local disk, one PUT
on an object store), so readers never see a half-written file. Readers ignore hidden files. The
partition column is not stored inside the files (hive convention); :func:`read_dataset`
restores it.

Compaction is the one change that spans several files, and object stores cannot rename. It
writes the merged parts (``merged-*``, not yet visible), then one commit record
``ROOT/_commits/<token>.json`` naming the parts it adds and the parts they replace, then deletes
the replaced ones. A ``merged-*`` part is visible only once a record adds it, and a part a
record replaces is never visible again: a compaction killed at any point shows either the old
rows or the new ones, never both and never neither.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from screening.config import require
from screening.location import Location, Where
from screening.schemas import TableSchema

__all__ = [
    "COMMITS_DIR",
    "PARTITION_VALUE_PATTERN",
    "compact_dataset",
    "quarantine_corrupt_parts",
    "read_dataset",
    "visible_parts",
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


#: Folder of compaction commit records (not a partition: no ``=`` in its name).
COMMITS_DIR = "_commits"
#: Prefix of compacted parts: visible only once a commit record adds them. (Parts named
#: ``compact-*`` by earlier versions, which renamed, are ordinary parts.)
COMPACT_PREFIX = "merged"


def _commits(root: Location) -> list[tuple[Location, set[str], set[str]]]:
    """Every commit record: (record, parts it adds, parts it replaces)."""
    out = []
    for record in (root / COMMITS_DIR).glob("*.json"):
        try:
            data = json.loads(record.read_text())
            out.append((record, set(data["adds"]), set(data["replaces"])))
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("unreadable compaction record %s: %s", record, e)
    return out


def _relative(part: Location) -> str:
    return f"{part.parent.name}/{part.name}"


def _part_files(root: Location) -> list[Location]:
    """The visible part files: written parts, and compacted parts a commit record added, minus
    every part a commit record replaced."""
    commits = _commits(root)
    added = set().union(*(a for _, a, _ in commits))
    replaced = set().union(*(r for _, _, r in commits))
    return [
        p
        for p in root.glob("*=*/*.parquet")
        if _relative(p) not in replaced
        and (not p.name.startswith(COMPACT_PREFIX + "-") or _relative(p) in added)
    ]


def visible_parts(root: Where) -> list[str]:
    """URLs (local paths) of a dataset's visible part files, for readers such as DuckDB."""
    return [p.url for p in _part_files(Location.of(root))]


def _load_part(path: Location) -> pa.Table | None:
    """A part file read whole, its page checksums verified; None when any of it cannot be
    read: a footer lost to a crash mid-copy, or a damaged data page behind an intact footer
    (which a footer check alone would pass, and a later reader would crash on)."""
    try:
        data = path.read_bytes()
        return pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
        log.warning("unreadable Parquet part %s: %s", path, e)
        return None


def quarantine_corrupt_parts(root: Where, quarantine: Where) -> list[Location]:
    """Move part files that cannot be read whole (truncated by a crash on a filesystem without
    atomic rename, a damaged page) out of the dataset into ``quarantine``; return their new
    locations. What they held no longer counts as committed, so a resumed run redoes those
    scans."""
    moved = []
    for f in _part_files(Location.of(root)):
        if _load_part(f) is not None:
            continue
        dest = Location.of(quarantine) / f.parent.name / f.name
        f.move_to(dest)
        log.warning("moved an unreadable Parquet part out of the dataset: %s -> %s", f, dest)
        moved.append(dest)
    return moved


def write_part(
    root: Where,
    schema: TableSchema,
    rows: Iterable[Mapping[str, Any]],
    partition: str = "cohort",
    prefix: str = "part",
) -> list[Location]:
    """Conform ``rows`` to ``schema`` and write one part file per partition value, atomically."""
    table = schema.conform(rows)
    if table.num_rows == 0:
        return []
    base = Location.of(root)
    written = []
    for value in pc.unique(table[partition]).to_pylist():
        check_partition_value(str(value), partition)
        part = table.filter(pc.equal(table[partition], value)).drop_columns([partition])
        buffer = io.BytesIO()
        pq.write_table(part, buffer, compression="zstd", write_page_checksum=True)
        target = base / f"{partition}={value}" / f"{prefix}-{uuid.uuid4().hex}.parquet"
        target.write_bytes(buffer.getvalue())
        written.append(target)
    return written


def _read_files(
    files: list[Location], schema: TableSchema, partition: str
) -> tuple[pa.Table, list[Location]]:
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


def read_dataset(root: Where, schema: TableSchema, partition: str = "cohort") -> pa.Table:
    """All rows of a dataset (empty table with the contract's schema when there is none)."""
    return _read_files(_part_files(Location.of(root)), schema, partition)[0]


def compact_dataset(
    root: Where,
    schema: TableSchema,
    key: str | Sequence[str],
    order_by: str,
    partition: str = "cohort",
) -> int:
    """Keep only the latest row (largest ``order_by``) per ``key`` across the whole dataset and
    rewrite each partition as one file. Returns the number of rows dropped.

    The new files are complete before the commit record that retires the old ones is written,
    and the old ones are deleted only after it: a crash at any point loses no row and shows no
    row twice.
    """
    base = Location.of(root)
    table, files = _read_files(_part_files(base), schema, partition)
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
    new = write_part(base, schema, rows, partition=partition, prefix=COMPACT_PREFIX)
    record = base / COMMITS_DIR / f"{uuid.uuid4().hex}.json"
    record.write_json(
        {"adds": [_relative(p) for p in new], "replaces": [_relative(f) for f in files]}
    )
    for f in files:
        f.remove()
    _collect_garbage(base)
    return dropped


def _collect_garbage(root: Location) -> None:
    """Remove compacted parts no record adds (left by a compaction killed before its commit)
    and records whose parts are all gone (nothing left to add or hide). Compaction runs alone
    (under the run or ingest lock), so no other compaction is between its writes and commit."""
    commits = _commits(root)
    added = set().union(*(a for _, a, _ in commits))
    present = set()
    for p in root.glob("*=*/*.parquet"):
        if p.name.startswith(COMPACT_PREFIX + "-") and _relative(p) not in added:
            p.remove()
        else:
            present.add(_relative(p))
    for record, adds, replaces in commits:
        if not (adds | replaces) & present:
            record.remove()
