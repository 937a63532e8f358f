"""SQL over the Parquet results with DuckDB: ``measurements``, ``failures`` and ``scans``.

Each dataset is read with its data contract (hive partition restored, contract types, an empty
table with the right columns when nothing was written yet), so a query never depends on which
part files exist. Hidden temporary files of a write in progress are never read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from screening.errors import ConfigError

__all__ = ["EXAMPLE_QUERIES", "connect", "run_query"]

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


def connect(results: str | os.PathLike[str], store: str | os.PathLike[str] | None = None) -> Any:
    """A DuckDB connection with views ``measurements`` and ``failures`` over ``results`` and,
    when ``store`` is given, ``scans`` over its catalog."""
    import duckdb

    from screening.schemas import load_table_schema
    from screening.tables import read_dataset

    root = Path(results)
    if not root.is_dir():
        raise ConfigError(f"no results folder at {root}: run `screening measure` (or run) first")
    con = duckdb.connect()
    datasets = {"measurements": root / "measurements", "failures": root / "failures"}
    if store is not None:
        from screening.ingest.catalog import CATALOG_DIR

        datasets["scans"] = Path(store) / CATALOG_DIR
    for name, folder in datasets.items():
        con.register(name, read_dataset(folder, load_table_schema(name)))
    return con


def run_query(
    results: str | os.PathLike[str], sql: str, store: str | os.PathLike[str] | None = None
) -> Any:
    """Run ``sql`` and return the result as a pyarrow Table; a bad query is a ConfigError."""
    import duckdb

    con = connect(results, store)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        raise ConfigError(f"query failed: {e}") from e
