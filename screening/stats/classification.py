"""Steatosis classification: AUC, sensitivity and specificity with paired bootstrap 95% CIs.

The paper's analysis (sklearn.metrics AUC / sensitivity / specificity, 1,000 bootstrap resamples
for 95% CIs), done exactly but vectorised: one set of resample indices is drawn and shared by
every method (a *paired* bootstrap, so methods can be compared resample by resample), and every
resample is evaluated at once from the per-resample case counts.

This module holds :func:`classification_table`, the Arrow wrapper, and re-exports the pieces:
point estimates (:mod:`screening.stats.estimates`), the paired bootstrap
(:mod:`screening.stats.bootstrap`), ROC points and band (:mod:`screening.stats.roc`), grades and
reference standards (:mod:`screening.stats.reference`).

Conventions
-----------
- Lower liver attenuation means more fat, so the *score* of a case is ``-HU`` (higher score =
  more likely steatotic). Functions that take a ``score`` (:func:`auc`, :func:`roc_points`) want
  it already in that orientation; functions that take ``hu`` negate it themselves.
- ``truth`` is a boolean array, ``True`` = steatosis by the reference standard (the caller
  chooses it: a reader's ROI <= 40 HU, a label column, MRI-PDFF, biopsy;
  see :func:`reference_standard_truth`).
- A test is positive when ``hu <= threshold_hu`` (40 HU in the paper).
- Undefined quantities are NaN, never an exception or a sklearn warning, and come with a
  ``note`` that says why (one class only, no cases).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from screening.config import require
from screening.constants import METHOD_COLUMNS, STEATOSIS_THRESHOLD_HU
from screening.errors import ConfigError
from screening.stats.bootstrap import BootstrapResult, bootstrap_classification, bootstrap_indices
from screening.stats.estimates import (
    BoolArray,
    Estimate,
    auc,
    confusion,
    sensitivity,
    specificity,
)
from screening.stats.reference import (
    GRADE_PROBLEMS,
    as_pylist,
    grade_roc_table,
    reference_standard_truth,
)
from screening.stats.roc import RocBand, RocPoints, roc_band, roc_points

__all__ = [
    "CLASSIFICATION_SCHEMA",
    "DEFAULT_METHODS",
    "GRADE_PROBLEMS",
    "BootstrapResult",
    "Estimate",
    "RocBand",
    "RocPoints",
    "auc",
    "bootstrap_classification",
    "bootstrap_indices",
    "classification_table",
    "confusion",
    "grade_roc_table",
    "reference_standard_truth",
    "roc_band",
    "roc_points",
    "sensitivity",
    "specificity",
]

#: Method name -> measurements column holding its liver attenuation (HU).
DEFAULT_METHODS: Mapping[str, str] = METHOD_COLUMNS

#: Columns of :func:`classification_table`.
CLASSIFICATION_SCHEMA = pa.schema(
    [("method", pa.string()), ("reader", pa.string())]
    + [(c, pa.int64()) for c in ("n", "n_pos", "n_neg", "n_missing")]
    + [
        (f"{metric}{end}", pa.float64())
        for metric in ("auc", "sensitivity", "specificity")
        for end in ("", "_lo", "_hi")
    ]
    + [(c, pa.int64()) for c in ("tp", "fp", "tn", "fn", "n_boot", "n_boot_used")]
    + [("confidence", pa.float64()), ("threshold_hu", pa.float64()), ("note", pa.string())]
)


# --------------------------------------------------------------------------------------------
# Table wrapper
# --------------------------------------------------------------------------------------------


def _truth_with_mask(values: Any) -> tuple[BoolArray, BoolArray]:
    """(truth, has_truth) from booleans (or 0/1) with nulls / None / NaN for missing."""
    arr = values
    if not isinstance(arr, pa.ChunkedArray | pa.Array):
        arr = pa.array(as_pylist(values), from_pandas=True)
    has = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)
    if not pa.types.is_boolean(arr.type):
        numeric = pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
        if not numeric or not set(arr.drop_null().to_pylist()) <= {0, 1}:
            raise ConfigError(
                f"truth must be boolean (True = steatosis; null = missing), got {arr.type} "
                f"values such as {arr.drop_null()[:5].to_pylist()}"
            )
        arr = pc.not_equal(arr, pa.scalar(0, arr.type))
    t = np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.bool_)
    return t, has


def classification_table(
    table: pa.Table,
    *,
    truth_col: str | None = None,
    truth: Any = None,
    methods: Mapping[str, str] | None = None,
    reader: str = "truth",
    threshold_hu: float = STEATOSIS_THRESHOLD_HU,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = 0.95,
) -> pa.Table:
    """One row per method: AUC, sensitivity, specificity with paired bootstrap CIs, confusion.

    Parameters
    ----------
    table : pyarrow.Table
        One row per scan, with a liver attenuation column (HU) per method.
    truth_col, truth
        Exactly one: the name of a boolean column of ``table``, or a boolean array (numpy,
        list, or pyarrow, e.g. from :func:`reference_standard_truth`) with one value per row.
        True = steatosis; null = no reference. The caller chooses the reference standard.
    methods : dict method -> column
        Default :data:`DEFAULT_METHODS` (ai_3d, ai_2d, ai_roi).
    reader : str
        Label of the reference standard, copied into the ``reader`` column.
    threshold_hu, n_boot, seed, confidence
        As :func:`bootstrap_classification`.

    Returns
    -------
    pyarrow.Table
        :data:`CLASSIFICATION_SCHEMA`. Rows with a null method value or a null truth are left
        out of that method and counted in ``n_missing``; methods stay paired on the rows they
        share (one set of resample indices over the rows with a truth).
    """
    methods = dict(DEFAULT_METHODS if methods is None else methods)
    require(
        (truth_col is None) != (truth is None),
        "give exactly one of truth_col (a column name) or truth (an array)",
    )
    absent = [
        c for c in [*methods.values(), truth_col] if c is not None and c not in table.schema.names
    ]
    if absent:
        raise ConfigError(
            f"table has no column(s) {absent}; it has {table.schema.names}. Pass methods= "
            "(method -> attenuation column) or truth_col= naming existing columns"
        )
    t, has = _truth_with_mask(table[truth_col] if truth_col is not None else truth)
    require(t.size == table.num_rows, f"truth has {t.size} values for {table.num_rows} rows")
    hu = {}
    for name, col in methods.items():
        values = table[col].cast(pa.float64()).to_numpy(zero_copy_only=False)  # null -> NaN
        hu[name] = np.asarray(values, np.float64)[has]
    res = bootstrap_classification(
        hu, t[has], threshold_hu=threshold_hu, n_boot=n_boot, seed=seed, confidence=confidence
    )
    rows = []
    for j, name in enumerate(res.methods):
        n_missing = table.num_rows - int(res.n[j])
        row: dict[str, Any] = {"method": name, "reader": reader, "n_missing": n_missing}
        for k in CLASSIFICATION_SCHEMA.names:
            if k not in row and k != "note":
                v = getattr(res, k)
                row[k] = v[j].item() if isinstance(v, np.ndarray) else v
        note = res.notes[j]
        if (~has).any():
            note = "; ".join(x for x in (f"{int((~has).sum())} rows without a truth", note) if x)
        row["note"] = note
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=CLASSIFICATION_SCHEMA)
