"""Expert reference reads (input for agreement statistics), loaded and checked.

The contract is ``schemas/reference_reads.yaml``: one row per scan and reader with ``reader`` and
``roi_hu`` (HU), keyed by ``scan_id`` or by another scans-table column such as ``case_id``,
which :func:`normalize_reference_reads` maps to ``scan_id`` through the scans table.

:func:`load_reference_reads` reads a CSV or Parquet file and calls
:func:`normalize_reference_reads`, the pure table-in, table-out part.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from screening.errors import ConfigError
from screening.schemas import load_table_schema

__all__ = [
    "KEY_PREFERENCE",
    "PASS_THROUGH_COLUMNS",
    "load_reference_reads",
    "normalize_reference_reads",
]

#: Key columns tried first, in order, when the reads share several columns with the scans.
KEY_PREFERENCE: tuple[str, ...] = ("scan_id", "case_id")

#: Optional columns kept and typed: schema columns, plus ``grade`` and ``mri_pdff_pct``.
PASS_THROUGH_COLUMNS: tuple[str, ...] = (
    "label",
    "grade",
    "pdff_pct",
    "mri_pdff_pct",
    "biopsy_grade",
)

_READER, _READ = "reader", "roi_hu"
_MISSING = {"", "na", "nan", "null", "none"}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}
_SHOW = 5  # examples named in an error message


@dataclass(frozen=True)
class _Origin:
    """Where the reads came from, to name the file and the rows in error messages."""

    path: Path | None = None
    lines: Sequence[int] | None = None  # file line of each data row (CSV)

    def rows(self, indices: Sequence[int]) -> str:
        """``indices`` (0-based table rows) as file lines or 1-based rows, a few of them."""
        if self.lines is None:
            what, nums, tail = "row(s)", [i + 1 for i in indices], " (1-based)"
        else:
            what, nums, tail = "file line(s)", [self.lines[i] for i in indices], ""
        shown = ", ".join(str(n) for n in nums[:_SHOW])
        more = f" and {len(nums) - _SHOW} more" if len(nums) > _SHOW else ""
        return f"{what} {shown}{more}{tail}"


def _read_csv(path: Path) -> tuple[pa.Table, list[int]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        body, lines = [], []
        for row in reader:
            if any(cell.strip() for cell in row):  # blank lines are skipped
                body.append(row)
                lines.append(reader.line_num)
    if not header:
        raise ConfigError(
            "the reads CSV is empty; expected a header row with reader, roi_hu and a key "
            "column (scan_id or case_id), then one row per scan and reader",
            path=path,
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    bad = [i for i, row in enumerate(body) if len(row) != len(header)]
    if dup or bad:
        where = _Origin(path, lines).rows(bad)
        problem = f"repeated column name(s) {dup}" if dup else f"{where} with a wrong count"
        raise ConfigError(
            f"the reads CSV has {problem}; expected {len(header)} comma-separated fields per "
            "row under unique header names. Fix the file (quote values that hold commas).",
            path=path,
        )
    columns = {
        h: pa.array([None if row[j].strip() == "" else row[j].strip() for row in body], pa.string())
        for j, h in enumerate(header)
    }
    return pa.table(columns), lines


def load_reference_reads(path: str | os.PathLike[str], scans: pa.Table | None = None) -> pa.Table:
    """Load expert reads from a CSV (``.csv``, ``.csv.gz``) or Parquet file (or dataset folder).

    Parameters
    ----------
    path
        The reads file: ``reader``, ``roi_hu`` (HU) and a key column, one row per scan and
        reader. CSV values are read as text (keys keep leading zeros) and typed here.
    scans : pyarrow.Table, optional
        The scans table (``scan_id`` plus the key column, e.g. ``case_id``). Needed when the
        reads have no ``scan_id``; when given, reads of unknown scans are dropped with a warning.

    Returns
    -------
    pyarrow.Table
        See :func:`normalize_reference_reads`.

    Raises
    ------
    ConfigError
        The file is missing or of an unknown kind, or its content breaks the contract.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"reference reads not found at {p}; expected a CSV or Parquet file", path=p
        )
    name = p.name.lower()
    lines: list[int] | None = None
    if name.endswith((".csv", ".csv.gz")):
        table, lines = _read_csv(p)
    elif p.is_dir() or name.endswith((".parquet", ".pq")):
        try:
            table = pq.read_table(p)
        except (OSError, pa.ArrowException) as e:
            raise ConfigError(
                f"cannot read the reads Parquet ({e}); expected a readable Parquet file",
                path=p,
            ) from e
    else:
        raise ConfigError(
            f"reference reads file {p.name!r} has an unknown extension; expected .csv, "
            ".csv.gz, .parquet or .pq (or a Parquet dataset folder). Rename or convert it.",
            path=p,
        )
    return normalize_reference_reads(table, scans, source=p, line_numbers=lines)


def _parse(
    values: list[Any], column: str, convert: Any, expected: str, origin: _Origin
) -> list[Any]:
    """Apply ``convert`` to each non-missing value; name the rows where it fails."""
    out: list[Any] = []
    bad: list[int] = []
    for i, v in enumerate(values):
        if (
            v is None
            or (isinstance(v, str) and v.strip().lower() in _MISSING)
            or (isinstance(v, float) and math.isnan(v))
        ):
            out.append(None)
            continue
        try:
            out.append(convert(v))
        except (TypeError, ValueError):
            out.append(None)
            bad.append(i)
    if bad:
        examples = ", ".join(repr(values[i]) for i in bad[:_SHOW])
        raise ConfigError(
            f"column {column!r} holds {len(bad)} value(s) that are not {expected} at "
            f"{origin.rows(bad)}: {examples}. Fix those cells (leave a cell empty for a missing "
            "value).",
            path=origin.path,
        )
    return out


def _to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise TypeError("a boolean is not a number")
    x = float(v)
    if math.isinf(x):
        raise ValueError("infinite")
    return x


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    text = str(v).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(v)


def _to_grade(v: Any) -> int:
    x = float(v)
    if x != int(x) or not 0 <= x <= 3:
        raise ValueError(v)
    return int(x)


_CONVERTERS = {
    _READ: (_to_float, "numbers (HU)", pa.float64()),
    "label": (_to_bool, "true/false (or 1/0, yes/no)", pa.bool_()),
    "pdff_pct": (_to_float, "numbers (%)", pa.float64()),
    "mri_pdff_pct": (_to_float, "numbers (%)", pa.float64()),
    "biopsy_grade": (_to_grade, "integer grades 0-3", pa.int8()),
}


def _as_text(column: pa.ChunkedArray) -> list[str | None]:
    return [None if v is None else str(v) for v in column.to_pylist()]


def _choose_key(table: pa.Table, scans: pa.Table | None, source: Path | None) -> str:
    if KEY_PREFERENCE[0] in table.column_names:
        return KEY_PREFERENCE[0]
    if scans is None:
        raise ConfigError(
            f"the reads have no 'scan_id' column (received {table.column_names}) and no scans "
            "table was given to map another key; add a scan_id column, or pass the scans "
            "table (screening.store.catalog.read_catalog) so a shared column such as "
            "case_id is mapped to scan_id",
            path=source,
        )
    reserved = {_READER, _READ, *PASS_THROUGH_COLUMNS}
    shared = [c for c in table.column_names if c in scans.column_names and c not in reserved]
    for preferred in KEY_PREFERENCE[1:]:
        if preferred in shared:
            return preferred
    if len(shared) == 1:
        return shared[0]
    if not shared:
        raise ConfigError(
            f"no usable key: the reads (columns {table.column_names}) share no column with "
            f"the scans table (columns {scans.column_names}); expected scan_id or a scans "
            "column such as case_id. Add one of them to the reads.",
            path=source,
        )
    raise ConfigError(
        f"ambiguous key: the reads share several columns with the scans table {shared} and "
        f"none of {list(KEY_PREFERENCE)}; keep only the key column in the reads or rename it "
        "to scan_id or case_id",
        path=source,
    )


def _scan_lookup(scans: pa.Table, key: str, source: Path | None) -> dict[str, str]:
    """Key value -> scan_id, from the scans table (preferring ``status == 'ok'`` rows)."""
    ids = _as_text(scans.column("scan_id"))
    keys = _as_text(scans.column(key))
    status = (
        _as_text(scans.column("status")) if "status" in scans.column_names else [None] * len(ids)
    )
    found: dict[str, dict[str, bool]] = {}
    for k, sid, st in zip(keys, ids, status, strict=True):
        if k is not None and sid is not None:
            found.setdefault(k, {})
            found[k][sid] = found[k].get(sid, False) or st in (None, "ok")
    lookup: dict[str, str] = {}
    ambiguous: list[str] = []
    for k, sids in found.items():
        ok = [s for s, good in sids.items() if good] or list(sids)
        if len(ok) == 1:
            lookup[k] = ok[0]
        else:
            ambiguous.append(f"{k!r} -> {sorted(ok)[:3]}")
    if ambiguous:
        raise ConfigError(
            f"{len(ambiguous)} {key} value(s) match several scans, e.g. "
            f"{'; '.join(ambiguous[:3])}; a read must name one scan. Key the reads by scan_id "
            "instead.",
            path=source,
        )
    return lookup


def _check_unique(
    keys: list[str | None], readers: list[str | None], label: str, origin: _Origin
) -> None:
    first: dict[tuple[str | None, str | None], int] = {}
    dups: list[str] = []
    for i, pair in enumerate(zip(keys, readers, strict=True)):
        if pair[0] is None:
            continue
        if pair in first:
            dups.append(f"{pair} at {origin.rows([first[pair], i])}")
        else:
            first[pair] = i
    if dups:
        raise ConfigError(
            f"{len(dups)} duplicate ({label}, reader) row(s), e.g. {'; '.join(dups[:3])}; "
            "expected one read per scan and reader. Average or drop the repeated reads.",
            path=origin.path,
        )


def normalize_reference_reads(
    table: pa.Table,
    scans: pa.Table | None = None,
    *,
    source: Path | None = None,
    line_numbers: Sequence[int] | None = None,
) -> pa.Table:
    """Check and type reference reads, mapping their key to ``scan_id``.

    Parameters
    ----------
    table : pyarrow.Table
        Raw reads: ``reader``, ``roi_hu`` (HU; text is parsed) and a key: ``scan_id`` if
        present, else the one column shared with ``scans`` (``case_id`` preferred).
    scans : pyarrow.Table, optional
        ``scan_id`` and the key column. Key values are compared as text. When one key value
        names several scans, only rows with ``status == 'ok'`` count.
    source
        The file the reads came from, for error messages.
    line_numbers
        The file line of each row (CSV), so errors name lines; otherwise rows are numbered
        from 1.

    Returns
    -------
    pyarrow.Table
        ``scan_id`` (string), ``reader`` (string), ``roi_hu`` (float64, HU; null where empty),
        then the key column when it is not scan_id (as text), then the optional columns present
        among :data:`PASS_THROUGH_COLUMNS` (``label`` bool, ``grade`` string, ``pdff_pct`` and
        ``mri_pdff_pct`` float64 in %, ``biopsy_grade`` int8 0-3), then any other columns
        unchanged. Validated against ``schemas/reference_reads.yaml``, whose metadata it carries.

    Raises
    ------
    ConfigError
        No reader or roi_hu column, no usable or an ambiguous key, nulls in reader or the key,
        duplicate (key, reader) rows, or unparseable values (the message names the rows).

    Warns
    -----
    UserWarning
        When reads name scans absent from ``scans``: those rows are dropped and counted.
    """
    names = table.column_names
    missing = [c for c in (_READER, _READ) if c not in names]
    if missing:
        lower = {c.lower(): c for c in names}
        hint = [f"{lower[m]!r} -> {m!r}" for m in missing if m in lower]
        raise ConfigError(
            f"the reads lack column(s) {missing}; received {names}. Expected 'reader' (who "
            "read it) and 'roi_hu' (their liver attenuation, HU), one row per scan and reader: "
            + (f"rename {', '.join(hint)}" if hint else "rename or add those columns"),
            path=source,
        )
    if scans is not None and "scan_id" not in scans.column_names:
        raise ConfigError(
            f"the scans table has no scan_id column (received {scans.column_names}); pass "
            "the scans catalog (screening.store.catalog.read_catalog)",
            path=source,
        )
    origin = _Origin(source, line_numbers)
    key = _choose_key(table, scans, source)
    keys = _as_text(table.column(key))
    readers = _as_text(table.column(_READER))
    for label, vals in ((key, keys), (_READER, readers)):
        nulls = [i for i, v in enumerate(vals) if v is None]
        if nulls:
            raise ConfigError(
                f"column {label!r} is empty at {origin.rows(nulls)}; every read needs its {label}",
                path=source,
            )
    _check_unique(keys, readers, key, origin)
    typed: dict[str, pa.Array] = {}
    for column, (convert, expected, arrow_type) in _CONVERTERS.items():
        if column in names:
            raw = table.column(column).to_pylist()
            typed[column] = pa.array(_parse(raw, column, convert, expected, origin), arrow_type)
    if "grade" in names:
        typed["grade"] = pa.array(_as_text(table.column("grade")), pa.string())

    scan_ids: list[str | None]
    if key == "scan_id":
        scan_ids = list(keys)
        known = None if scans is None else set(_as_text(scans.column("scan_id")))
    else:
        assert scans is not None  # _choose_key guarantees it
        lookup = _scan_lookup(scans, key, source)
        scan_ids = [lookup.get(str(k)) for k in keys]
        known = set(lookup.values())
    keep = [i for i, s in enumerate(scan_ids) if s is not None and (known is None or s in known)]
    if len(keep) < len(scan_ids):
        kept = set(keep)
        lost = sorted({str(keys[i]) for i in range(len(keys)) if i not in kept})
        warnings.warn(
            f"{len(scan_ids) - len(keep)} of {len(scan_ids)} reads ({len(lost)} {key} "
            f"value(s), e.g. {lost[:_SHOW]}) match no scan in the scans table and were "
            f"dropped; check the {key} values or pass the scans table they belong to",
            UserWarning,
            stacklevel=2,
        )
    if key != "scan_id":
        _check_unique(scan_ids, readers, "scan_id", origin)

    take = pa.array(keep, pa.int64())
    columns: dict[str, pa.Array] = {
        "scan_id": pa.array(scan_ids, pa.string()).take(take),
        "reader": pa.array(readers, pa.string()).take(take),
        _READ: typed[_READ].take(take),
    }
    if key != "scan_id":
        columns[key] = pa.array(keys, pa.string()).take(take)
    for column in PASS_THROUGH_COLUMNS:
        if column in typed:
            columns[column] = typed[column].take(take)
    for column in names:
        if column not in columns:
            columns[column] = table.column(column).take(take)
    schema = load_table_schema("reference_reads")
    out = pa.table(columns).replace_schema_metadata(schema.metadata())
    schema.validate(out)
    return out
