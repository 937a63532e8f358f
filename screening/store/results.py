"""A results folder: the Parquet sink of a run and the records of its pipelines.

The sink: rows buffered briefly, then committed as atomic part files.

A row is *committed* once its part file has been renamed into ``RESULTS/measurements`` (or
``failures``); that is what resume counts as done. Buffering trades at most ``flush_rows`` rows
or ``flush_seconds`` of work (redone after a hard kill of the client) for fewer, larger files;
``screening compact`` merges them later.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from screening.errors import ConfigError
from screening.fsutil import exclusive_lock
from screening.location import Location, Where
from screening.schemas import load_table_schema
from screening.tables import compact_dataset, read_dataset, write_part

__all__ = [
    "FAILURES_DIR",
    "MEASUREMENTS_DIR",
    "PIPELINES_DIR",
    "ResultSink",
    "committed_scans",
    "compact_results",
    "failure_counts",
    "read_pipeline",
    "results_lock",
    "write_pipeline_record",
]

log = logging.getLogger(__name__)

MEASUREMENTS_DIR = "measurements"
FAILURES_DIR = "failures"
PIPELINES_DIR = "pipelines"


class ResultSink:
    """Buffers ``measurements`` and ``failures`` rows; :meth:`flush` commits them."""

    def __init__(
        self,
        results: Where,
        *,
        flush_rows: int = 64,
        flush_seconds: float = 5.0,
    ) -> None:
        self.results = Location.of(results)
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._schemas = {
            MEASUREMENTS_DIR: load_table_schema("measurements"),
            FAILURES_DIR: load_table_schema("failures"),
        }
        self._rows: dict[str, list[Mapping[str, Any]]] = {name: [] for name in self._schemas}
        self._last_flush = time.monotonic()
        self.n_committed = 0
        self.n_files = 0

    def add(self, table: str, row: Mapping[str, Any]) -> None:
        self._rows[table].append(row)
        if (
            sum(len(r) for r in self._rows.values()) >= self.flush_rows
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Commit every buffered row. Failures go first: a measurement row is the scan's
        commit point, so its failure detail is never the part that is lost."""
        for name in (FAILURES_DIR, MEASUREMENTS_DIR):
            rows = self._rows[name]
            if rows:
                files = write_part(self.results / name, self._schemas[name], rows)
                self.n_files += len(files)
                if name == MEASUREMENTS_DIR:
                    self.n_committed += len(rows)
                self._rows[name] = []
        self._last_flush = time.monotonic()


def results_lock(results: Location, name: str, what: str) -> AbstractContextManager[None]:
    """One writer per results folder: an exclusive lock on a local disk. Object stores have
    no lock: running two writers on one results prefix is the user's to avoid (each row is
    still written once, and compaction keeps one row per scan and pipeline)."""
    if results.is_local:
        return exclusive_lock(results.local_path() / name, what)
    log.info("%s: no lock on object storage (%s); run one writer per prefix", what, results)
    return nullcontext()


def committed_scans(results: Where, pid: str) -> tuple[set[str], set[str]]:
    """(scan_ids with a committed non-failed row for ``pid``, scan_ids with only failed rows)."""
    table = read_dataset(Location.of(results) / MEASUREMENTS_DIR, load_table_schema("measurements"))
    done: set[str] = set()
    failed: set[str] = set()
    for scan_id, p, status in zip(
        table["scan_id"].to_pylist(),
        table["pipeline_id"].to_pylist(),
        table["status"].to_pylist(),
        strict=True,
    ):
        if p == pid:
            (failed if status == "failed" else done).add(scan_id)
    return done, failed - done


def failure_counts(results: Where, pid: str) -> dict[str, int]:
    """Failed attempts recorded so far per scan_id for ``pid`` (for the ``attempt`` column)."""
    table = read_dataset(Location.of(results) / FAILURES_DIR, load_table_schema("failures"))
    counts: dict[str, int] = {}
    for scan_id, p in zip(
        table["scan_id"].to_pylist(), table["pipeline_id"].to_pylist(), strict=True
    ):
        if p == pid:
            counts[scan_id] = counts.get(scan_id, 0) + 1
    return counts


def compact_results(results: Where) -> dict[str, int]:
    """Merge each results dataset's part files (one per partition) and drop superseded rows:
    ``measurements`` keeps the latest row per (scan_id, pipeline_id); ``failures`` keeps all.

    Returns rows dropped per dataset. Safe to run while nothing writes to RESULTS.
    """
    root = Location.of(results)
    dropped = {
        MEASUREMENTS_DIR: compact_dataset(
            root / MEASUREMENTS_DIR,
            load_table_schema("measurements"),
            key=["scan_id", "pipeline_id"],
            order_by="measured_at",
        ),
        FAILURES_DIR: compact_dataset(
            root / FAILURES_DIR,
            load_table_schema("failures"),
            key=["scan_id", "pipeline_id", "stage", "attempt", "at"],
            order_by="at",
        ),
    }
    log.info("compacted %s: dropped %s", root, dropped)
    return dropped


def write_pipeline_record(results: Where, record: Mapping[str, Any]) -> Location:
    """Write ``RESULTS/pipelines/<id[:16]>.json``: what a pipeline id stands for and which
    scan store it ran on, so statistics and reports can find the store and name the pipeline
    without the user repeating it."""
    pid = str(record["pipeline_id"])
    path = Location.of(results) / PIPELINES_DIR / f"{pid[:16]}.json"
    path.write_json(dict(record))
    return path


def read_pipeline(results: Where, pipeline_id: str | None = None) -> dict[str, Any]:
    """The record of ``pipeline_id`` (a prefix is enough), or of the pipeline run last."""
    folder = Location.of(results) / PIPELINES_DIR
    records = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    if pipeline_id:
        records = [r for r in records if str(r["pipeline_id"]).startswith(pipeline_id)]
    if not records:
        wanted = f"pipeline {pipeline_id}" if pipeline_id else "any pipeline"
        raise ConfigError(
            f"no record of {wanted} under {folder}: run `screening run STORE --out {results}` "
            "first (or give --store)"
        )
    return max(records, key=lambda r: str(r.get("last_run_at", "")))
