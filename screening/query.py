"""SQL over the Parquet results with DuckDB: ``measurements``, ``failures`` and ``scans``.

Each dataset is read with its data contract (hive partition restored, contract types, an empty
table with the right columns when nothing was written yet), so a query never depends on which
part files exist. Hidden temporary files of a write in progress are never read.

A user's SQL (:func:`run_query`, ``screening query``) runs sandboxed: the tables are registered
in memory first, then DuckDB's external access is switched off and the configuration locked,
so the query can read those tables and nothing else (no other file, such as the key file, no
extension install) and can write no file (``COPY ... TO`` is refused).
"""

from __future__ import annotations

import os
from typing import Any

from screening.errors import ConfigError
from screening.location import Location, Where
from screening.store.catalog import CATALOG_DIR

__all__ = ["EXAMPLE_QUERIES", "connect", "run_query", "sandbox"]

#: Shown by ``screening query --examples`` and in the README.
EXAMPLE_QUERIES = {
    "prevalence by cohort (AI-ROI, unenhanced scans)": (
        "select cohort, count(*) as n, avg(steatosis_roi::int) as prevalence "
        "from measurements where status = 'ok' and not contrast_suspected group by cohort"
    ),
    "flagged scans and their overlays": (
        "select scan_id, qc_flags, reason, overlay_file from measurements "
        "where len(qc_flags) > 0 order by scan_id"
    ),
    "AI methods side by side with scanner (needs --store)": (
        "select s.manufacturer, s.kvp, m.liver_hu_3d, m.liver_hu_2d, m.liver_hu_roi "
        "from measurements m join scans s using (scan_id)"
    ),
}


def connect(results: Where, store: Where | None = None) -> Any:
    """A DuckDB connection with views ``measurements`` and ``failures`` over ``results`` and,
    when ``store`` is given, ``scans`` over its catalog."""
    import duckdb

    from screening.schemas import load_table_schema
    from screening.tables import read_dataset

    root = Location.of(results)
    root.check_reachable()
    if not root.is_dir():
        raise ConfigError(f"no results folder at {root}: run `screening measure` (or run) first")
    con = duckdb.connect()
    datasets = {"measurements": root / "measurements", "failures": root / "failures"}
    if store is not None:
        datasets["scans"] = Location.of(store) / CATALOG_DIR
    for name, folder in datasets.items():
        con.register(name, read_dataset(folder, load_table_schema(name)))
    return con


def sandbox(con: Any) -> Any:
    """Lock ``con`` to what is registered in it: no file access, no writes, no settings."""
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(
    results: str | os.PathLike[str], sql: str, store: str | os.PathLike[str] | None = None
) -> Any:
    """Run ``sql`` (sandboxed) and return the result as a pyarrow Table; a bad query, or one
    that reaches for a file, is a ConfigError."""
    import duckdb

    con = sandbox(connect(results, store))
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        raise ConfigError(f"query failed: {e}") from e
