"""Load the data contracts in ``schemas/`` (docs/data-contracts.md) and check tables against them.

The YAML files are the single source of truth. They live at the repository root and ship inside
the wheel as ``screening/_schemas``; this module finds them in either place.

>>> scans = load_table_schema("scans")
>>> scans.to_arrow().field("spacing_z_mm").type
DataType(float)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from screening.errors import SchemaMismatchError

__all__ = [
    "Column",
    "TableSchema",
    "load_categories",
    "load_store_layout",
    "load_table_schema",
    "parse_arrow_type",
    "schema_dir",
    "table_names",
]

_STORE_LAYOUT = "scan_store"
_CATEGORIES = "categories"


def schema_dir() -> Traversable:
    """Folder holding the schema YAML files (inside the wheel, or the repository's ``schemas/``)."""
    packaged = resources.files("screening") / "_schemas"
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parent.parent / "schemas"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError(
        "schema files not found: expected screening/_schemas in the installed package or "
        f"schemas/ next to the source tree at {source_tree}; reinstall the package"
    )


def _read_yaml(stem: str) -> Any:
    return yaml.safe_load((schema_dir() / f"{stem}.yaml").read_text(encoding="utf-8"))


def parse_arrow_type(text: str) -> pa.DataType:
    """Arrow type from its schema-file spelling.

    Supports the aliases of :func:`pyarrow.type_for_alias` (``string``, ``float32``, ``bool``...),
    ``list<T>`` and ``timestamp[unit, tz=Zone]``.
    """
    text = text.strip()
    if m := re.fullmatch(r"list<(.+)>", text):
        return pa.list_(parse_arrow_type(m.group(1)))
    if m := re.fullmatch(r"timestamp\[(\w+)(?:,\s*tz=([\w/+-]+))?\]", text):
        return pa.timestamp(m.group(1), tz=m.group(2))
    try:
        return pa.type_for_alias(text)
    except ValueError as e:
        raise SchemaMismatchError(f"unknown Arrow type {text!r} in a schema file") from e


@dataclass(frozen=True)
class Column:
    """One column of a data contract."""

    name: str
    type: str
    description: str
    unit: str | None = None
    nullable: bool = True
    required: bool = True  # False: an input may omit it (only for input tables)
    category: str | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        return parse_arrow_type(self.type)

    def to_arrow(self) -> pa.Field:
        meta = {"description": self.description}
        if self.unit:
            meta["unit"] = self.unit
        return pa.field(self.name, self.arrow_type, nullable=self.nullable, metadata=meta)


@dataclass(frozen=True)
class TableSchema:
    """A Parquet table's contract: columns, partitioning, key and version."""

    name: str
    version: int
    description: str
    location: str
    partitioning: tuple[str, ...]
    key: tuple[str, ...]
    allow_extra: bool
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")

    def metadata(self) -> dict[bytes, bytes]:
        """Schema-level metadata written into every Parquet file of this table."""
        return {
            b"screening.schema": self.name.encode(),
            b"screening.schema_version": str(self.version).encode(),
        }

    def to_arrow(self) -> pa.Schema:
        return pa.schema([c.to_arrow() for c in self.columns], metadata=self.metadata())

    def validate(self, table: pa.Table) -> None:
        """Raise :class:`SchemaMismatchError` listing every way ``table`` breaks the contract."""
        problems: list[str] = []
        present = set(table.column_names)
        for col in self.columns:
            if col.name not in present:
                if col.required:
                    problems.append(f"missing column {col.name!r} ({col.type})")
                continue
            got = table.schema.field(col.name).type
            want = col.arrow_type
            if not (got.equals(want) or pa.types.is_null(got)):
                problems.append(f"column {col.name!r} has type {got}, expected {want}")
                continue
            values = table.column(col.name)
            if not col.nullable and values.null_count:
                problems.append(f"column {col.name!r} has {values.null_count} null(s)")
            if col.category:
                allowed = set(load_categories()[col.category])
                seen = {v for v in values.to_pylist() if v is not None}
                bad = sorted(seen - allowed)
                if bad:
                    problems.append(f"column {col.name!r} has values {bad} outside {col.category}")
        extra = sorted(present - set(self.names))
        if extra and not self.allow_extra:
            problems.append(f"unexpected column(s) {extra}")
        if problems:
            raise SchemaMismatchError(
                f"table does not match schema {self.name!r} v{self.version}: "
                + "; ".join(problems)
                + ". Fix the producer, or change schemas/"
                + f"{self.name}.yaml and bump its version."
            )

    def conform(self, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
        """Build a table with exactly this schema from row dicts (absent nullable keys → null).

        Extra keys are kept as string columns when ``allow_extra``; otherwise they are an error.
        """
        rows = list(rows)
        known = set(self.names)
        extra = sorted({k for r in rows for k in r} - known)
        if extra and not self.allow_extra:
            raise SchemaMismatchError(f"rows for {self.name!r} carry unknown keys {extra}")
        arrays = [pa.array([r.get(c.name) for r in rows], type=c.arrow_type) for c in self.columns]
        fields = [c.to_arrow() for c in self.columns]
        for name in extra:
            arrays.append(pa.array([_as_str(r.get(name)) for r in rows], type=pa.string()))
            fields.append(pa.field(name, pa.string()))
        table = pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=self.metadata()))
        self.validate(table)
        return table


def _as_str(value: object) -> str | None:
    return None if value is None else str(value)


def _column(spec: Mapping[str, Any], table: str) -> Column:
    unknown = set(spec) - {
        "name",
        "type",
        "description",
        "unit",
        "nullable",
        "required",
        "category",
    }
    if unknown:
        raise SchemaMismatchError(
            f"schema {table!r}: column {spec.get('name')!r} has keys {unknown}"
        )
    return Column(**spec)


@functools.cache
def load_table_schema(name: str) -> TableSchema:
    """The contract of table ``name`` (see :func:`table_names`)."""
    if name not in table_names():
        raise KeyError(f"no schema named {name!r}; known: {table_names()}")
    raw = _read_yaml(name)
    return TableSchema(
        name=raw["name"],
        version=int(raw["version"]),
        description=" ".join(str(raw["description"]).split()),
        location=raw["location"],
        partitioning=tuple(raw.get("partitioning") or ()),
        key=tuple(raw.get("key") or ()),
        allow_extra=bool(raw.get("allow_extra", False)),
        columns=tuple(_column(c, name) for c in raw["columns"]),
    )


@functools.cache
def table_names() -> tuple[str, ...]:
    """Names of the table schemas shipped (every YAML except categories and the store layout)."""
    stems = sorted(
        entry.name.removesuffix(".yaml")
        for entry in schema_dir().iterdir()
        if entry.name.endswith(".yaml")
    )
    return tuple(s for s in stems if s not in {_STORE_LAYOUT, _CATEGORIES})


@functools.cache
def load_categories() -> dict[str, tuple[str, ...]]:
    """Allowed values of each categorical column, by category name."""
    raw = _read_yaml(_CATEGORIES)
    return {k: tuple(str(v) for v in vals) for k, vals in raw.items()}


@functools.cache
def load_store_layout() -> dict[str, Any]:
    """The scan-store layout (arrays, attributes, completion marker) as a plain dict."""
    layout: dict[str, Any] = _read_yaml(_STORE_LAYOUT)
    return layout
