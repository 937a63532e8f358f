"""Read the report's inputs: the STATS Parquet files (each optional) and RESULTS measurements.

A missing, unreadable or incomplete STATS file is not an error: :func:`load_stats` returns the
reason, and the report says "not computed: <reason>" in that section.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from screening.location import Location, Where
from screening.schemas import load_table_schema
from screening.tables import read_dataset

__all__ = [
    "STATS_COLUMNS",
    "Loaded",
    "floats",
    "load_measurements",
    "load_stats",
    "load_summary",
]

log = logging.getLogger(__name__)

#: STATS file stem -> the columns the report needs from it (others are ignored).
STATS_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "prevalence": (
        "method",
        "dimension",
        "group",
        "n_scans",
        "n_ingest_rejected",
        "n_not_run",
        "n_failed",
        "n_contrast_excluded",
        "n_undecided",
        "n_decided",
        "n_steatosis",
        "prevalence_pct",
        "ci_lo_pct",
        "ci_hi_pct",
    ),
    "prevalence_standardised": (
        "method",
        "prevalence_pct",
        "ci_lo_pct",
        "ci_hi_pct",
        "n_decided",
        "n_bands_missing",
    ),
    "classification": (
        "method",
        "reader",
        "n",
        "n_pos",
        "n_neg",
        "auc",
        "auc_lo",
        "auc_hi",
        "sensitivity",
        "sensitivity_lo",
        "sensitivity_hi",
        "specificity",
        "specificity_lo",
        "specificity_hi",
        "tp",
        "fp",
        "tn",
        "fn",
    ),
    "roc": ("method", "reader", "fpr", "tpr", "tpr_lo", "tpr_hi"),
    "classification_grades": ("method", "problem", "n", "n_pos", "auc", "auc_lo", "auc_hi"),
    "agreement": ("method", "reader", "n", "icc", "icc_lo", "icc_hi", "spearman"),
    "agreement_matrix": ("rater_a", "rater_b", "icc"),
    "paired": ("scan_id", "reader", "roi_hu", "liver_hu_3d", "liver_hu_2d", "liver_hu_roi"),
    "segmentation": ("scan_id", "cohort", "organ", "dice", "group"),
    "segmentation_summary": ("cohort", "organ", "group", "metric", "n", "mean", "std"),
    "repeatability": (
        "method",
        "n_subjects",
        "n_measurements",
        "within_sd",
        "repeatability_coefficient",
        "within_cv_pct",
        "mean",
    ),
}


@dataclass(frozen=True)
class Loaded:
    """A STATS table, or why there is none.

    Attributes
    ----------
    table
        The rows, or None when the file is missing, unreadable, incomplete or empty.
    why
        Empty when ``table`` is set; otherwise the reason, for the "not computed" line.
    """

    table: pa.Table | None
    why: str = ""

    def rows(self) -> list[dict[str, Any]]:
        """The rows as dicts (empty when there is no table)."""
        return [] if self.table is None else self.table.to_pylist()


def _load_one(path: Path, required: Sequence[str], skipped: str | None) -> Loaded:
    name = path.name
    if not path.is_file():
        if skipped:  # `screening stats` said why it did not write this table
            return Loaded(None, f"{name} not found in the STATS folder: {skipped}")
        return Loaded(None, f"{name} not found in the STATS folder (run `screening stats`)")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        log.warning("report: cannot read %s: %s", path, e)
        return Loaded(None, f"{name} could not be read ({type(e).__name__}: {e})")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        return Loaded(None, f"{name} lacks column(s) {', '.join(missing)}")
    if table.num_rows == 0:
        return Loaded(None, f"{name} has no rows")
    return Loaded(table)


def load_stats(
    stats_dir: str | os.PathLike[str], not_computed: Mapping[str, Any] | None = None
) -> dict[str, Loaded]:
    """Every STATS table the report knows (:data:`STATS_COLUMNS`), each loaded or explained.

    ``not_computed`` (``summary.json``'s table -> reason) explains a missing file.
    """
    skipped = {str(k): str(v) for k, v in (not_computed or {}).items() if v}
    root = Path(stats_dir)
    if not root.is_dir():
        log.warning("report: STATS folder %s does not exist; every section is 'not computed'", root)
        why = f"the STATS folder {root} does not exist (run `screening stats`)"
        return {stem: Loaded(None, why) for stem in STATS_COLUMNS}
    return {
        stem: _load_one(root / f"{stem}.parquet", cols, skipped.get(stem))
        for stem, cols in STATS_COLUMNS.items()
    }


def load_summary(stats_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """``summary.json`` as a dict, and why it is empty (missing or not a JSON object)."""
    path = Path(stats_dir) / "summary.json"
    if not path.is_file():
        return {}, "summary.json not found in the STATS folder"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return {}, f"summary.json could not be read ({type(e).__name__}: {e})"
    if not isinstance(data, dict):
        return {}, f"summary.json holds a {type(data).__name__}, expected an object"
    return data, ""


def load_measurements(results_dir: Where, pipeline_id: str | None) -> tuple[pa.Table, str]:
    """The measurements of RESULTS (rows of ``pipeline_id`` when given and present), and a note
    saying which rows were kept."""
    schema = load_table_schema("measurements")
    table = read_dataset(Location.of(results_dir) / "measurements", schema)
    if table.num_rows == 0 or not pipeline_id:
        return table, ""
    ids = table["pipeline_id"].to_pylist()
    keep = [i for i, p in enumerate(ids) if p == pipeline_id]
    if not keep:
        return table, f"no measurements of pipeline {pipeline_id}; showing all pipelines"
    if len(keep) == table.num_rows:
        return table, ""
    note = f"showing the {len(keep)} rows of pipeline {pipeline_id} (of {table.num_rows})"
    return table.take(pa.array(keep, pa.int64())), note


def floats(rows: Sequence[Mapping[str, Any]], column: str) -> NDArray[np.float64]:
    """One column of ``rows`` as float64, null -> NaN."""
    out = np.full(len(rows), math.nan)
    for i, r in enumerate(rows):
        v = r.get(column)
        if v is not None:
            out[i] = float(v)
    return out
