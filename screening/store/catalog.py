"""The scans catalog (``STORE/catalog/``) and the store's own metadata and lock.

The catalog is the ``scans`` table (``schemas/scans.yaml``): one row per series, accepted or not,
hive-partitioned by cohort. During a run rows are flushed as part files (atomic renames); at the
end the dataset is compacted to the latest row per ``scan_id``, so re-running ingest on the same
sources leaves exactly one row per series.

``STORE/store.json`` records the key fingerprint: running ingest on a store with a different
key would give every series a new ``scan_id`` (and duplicates), so it is refused.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pyarrow as pa

from screening._version import __version__
from screening.errors import ConfigError
from screening.fsutil import exclusive_lock
from screening.location import Location, Where
from screening.schemas import load_table_schema
from screening.tables import compact_dataset, read_dataset, write_part

__all__ = [
    "CATALOG_DIR",
    "CatalogWriter",
    "check_store_key",
    "ingest_lock",
    "read_catalog",
]

log = logging.getLogger(__name__)

CATALOG_DIR = "catalog"
STORE_META = "store.json"
LOCK_FILE = ".ingest.lock"
SCANS = load_table_schema("scans")
_UNKEYED = "unkeyed"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_store_key(store_root: Where, key_fingerprint: str | None) -> None:
    """Create ``store.json`` on first use; refuse a key other than the one the store was made with.

    A store made without a key (NIfTI only) is upgraded to keyed on the first keyed run: its
    NIfTI ids are content hashes and do not depend on the key.
    """
    root = Location.of(store_root)
    root.makedirs()
    meta_path = root / STORE_META
    fingerprint = key_fingerprint or _UNKEYED
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        stored = meta.get("key_fingerprint", _UNKEYED)
        if stored == fingerprint or (key_fingerprint is None and stored != _UNKEYED):
            return
        if stored != _UNKEYED:
            raise ConfigError(
                f"the store {root} was written with another pseudonymisation key (fingerprint "
                f"{stored}, this key {fingerprint}); using it would give every series a new "
                "scan_id. Use the original key file, or ingest into a new store"
            )
    meta = {
        "format": "screening-scan-store",
        "format_version": 1,
        "key_fingerprint": fingerprint,
        "engine_version": __version__,
    }
    meta_path.write_json(meta)


def ingest_lock(store_root: Where) -> AbstractContextManager[None]:
    """One ingest per store at a time (compaction rewrites the catalog); no lock in an object
    store (run one ingest per store prefix)."""
    root = Location.of(store_root)
    if root.is_local:
        return exclusive_lock(root.local_path() / LOCK_FILE, "ingest")
    log.info("ingest: no lock on object storage (%s); run one ingest per store", root)
    return nullcontext()


def read_catalog(store_root: Where) -> pa.Table:
    """The scans table of a store (latest row per scan_id after a completed ingest)."""
    return read_dataset(Location.of(store_root) / CATALOG_DIR, SCANS)


class CatalogWriter:
    """Buffers rows and flushes them as part files every ``flush_rows`` rows or
    ``flush_seconds`` seconds, so a crash loses at most that much (the stores survive and the
    next run re-derives their rows)."""

    def __init__(self, store_root: Where, flush_rows: int = 500, flush_seconds: float = 30) -> None:
        self.root = Location.of(store_root) / CATALOG_DIR
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._rows: list[dict[str, Any]] = []
        self._last = time.monotonic()
        self.written = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self._rows.append(dict(row))
        if (
            len(self._rows) >= self.flush_rows
            or time.monotonic() - self._last >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        if self._rows:
            write_part(self.root, SCANS, self._rows)
            self.written += len(self._rows)
            self._rows = []
        self._last = time.monotonic()

    def compact(self) -> int:
        """Flush, then keep the latest row per scan_id. Returns rows dropped."""
        self.flush()
        dropped = compact_dataset(self.root, SCANS, key="scan_id", order_by="ingested_at")
        if dropped:
            log.info("catalog compacted: %d superseded row(s) removed", dropped)
        return dropped
