"""Reference standards beyond a reader's ROI: MRI-PDFF and biopsy truth, and AUC against
graded steatosis (>= mild, >= moderate, severe) with paired bootstrap CIs."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError
from screening.reasons import SteatosisGrade
from screening.stats.bootstrap import (
    as_methods,
    as_rng,
    check_boot,
    check_missing,
    count_chunks,
    weighted_auc,
)
from screening.stats.estimates import auc

__all__ = ["GRADE_PROBLEMS", "grade_roc_table", "reference_standard_truth"]

#: The grade ROC problems: name -> lowest grade code counted positive (0 none ... 3 severe).
GRADE_PROBLEMS: dict[str, int] = {">= mild": 1, ">= moderate": 2, "severe": 3}

_GRADE_CODES: dict[str, int] = {g.value: i for i, g in enumerate(SteatosisGrade)}


def as_pylist(values: Any) -> list[Any]:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return list(values.to_pylist())
    return list(np.asarray(values, dtype=object).ravel())


def _grade_codes(values: Any, what: str) -> NDArray[np.int8]:
    """0 none / 1 mild / 2 moderate / 3 severe (also 0-3, "S0"-"S3"); -1 where missing."""
    out = np.full(len(vals := as_pylist(values)), -1, dtype=np.int8)
    bad: list[Any] = []
    for i, v in enumerate(vals):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        key = str(v).strip().lower()
        key = key[1:] if key[:1] == "s" and key[1:].isdigit() else key
        if key in _GRADE_CODES:
            out[i] = _GRADE_CODES[key]
        elif isinstance(v, int | float | np.integer | np.floating) and float(v) in (0, 1, 2, 3):
            out[i] = int(v)
        elif key in ("0", "1", "2", "3"):
            out[i] = int(key)
        else:
            bad.append(v)
    if bad:
        raise ConfigError(
            f"{what}: {len(bad)} values are not a grade, e.g. {bad[:5]!r}; expected "
            "none/mild/moderate/severe, 0-3 or S0-S3 (null for missing)"
        )
    return out


def reference_standard_truth(
    column: Any, kind: Literal["mri_pdff", "biopsy"], *, pdff_cutoff_pct: float = 5.0
) -> pa.BooleanArray:
    """Steatosis truth from an external reference standard; nulls stay null.

    Parameters
    ----------
    column : array-like or pyarrow array
        ``kind="mri_pdff"``: MRI proton-density fat fraction in percent (not a fraction; NaN or
        null = missing). ``kind="biopsy"``: histological steatosis grade, 0-3 (also "S0"-"S3")
        or none / mild / moderate / severe.
    kind : {"mri_pdff", "biopsy"}
    pdff_cutoff_pct : float
        Steatosis when MRI-PDFF >= this (%, default 5 %, the usual MRI-PDFF cut-off).

    Returns
    -------
    pyarrow.BooleanArray
        True = steatosis: PDFF >= ``pdff_cutoff_pct``, or biopsy grade >= 1 (mild; more than
        5 % of hepatocytes with fat). Usable as ``classification_table(..., truth=...)``.
    """
    if kind == "mri_pdff":
        arr = pa.array(np.asarray(as_pylist(column), dtype=np.float64), from_pandas=True)
        valid = arr.drop_null().to_numpy()
        if valid.size and valid.max() <= 1.0:
            warnings.warn(
                "all MRI-PDFF values are <= 1: they look like fractions, percent is expected "
                "(multiply by 100)",
                UserWarning,
                stacklevel=2,
            )
        return pc.greater_equal(arr, pa.scalar(float(pdff_cutoff_pct)))
    if kind == "biopsy":
        codes = _grade_codes(column, "biopsy grade")
        return pa.array(codes >= 1, pa.bool_(), mask=codes < 0)
    raise ConfigError(f"kind must be 'mri_pdff' or 'biopsy', got {kind!r}")


def grade_roc_table(
    hu_or_pdff: ArrayLike | Mapping[str, ArrayLike],
    grades: Any,
    *,
    kind: Literal["hu", "pdff"] = "hu",
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = 0.95,
) -> pa.Table:
    """AUC with paired bootstrap CIs for the graded problems >= mild, >= moderate, severe.

    Parameters
    ----------
    hu_or_pdff : ndarray (n,) or (n_methods, n), or dict method -> ndarray (n,)
        Liver attenuation (HU; score ``-hu``) or estimated PDFF (%; score ``+pdff``), per
        ``kind``. NaN = missing for that method.
    grades : array-like, shape (n,)
        Reference grade per case: none / mild / moderate / severe (or 0-3); null = missing
        (the case is dropped and counted in ``n_missing``).
    n_boot, seed, confidence
        As :func:`bootstrap_classification`; one set of indices for all methods and problems.

    Returns
    -------
    pyarrow.Table
        One row per (method, problem): method, problem, n, n_pos, n_neg, n_missing, auc,
        auc_lo, auc_hi, n_boot_used, note. A problem with an empty class is skipped (NaN) with
        a note.
    """
    check_boot(n_boot, confidence)
    require(kind in ("hu", "pdff"), f"kind must be 'hu' or 'pdff', got {kind!r}")
    names, h = as_methods(hu_or_pdff)
    check_missing(h, "hu_or_pdff")
    codes = _grade_codes(grades, "grades")
    require(codes.size == h.shape[1], f"{codes.size} grades for {h.shape[1]} cases")
    has_grade = codes >= 0
    h, codes = h[:, has_grade], codes[has_grade]
    sign = -1.0 if kind == "hu" else 1.0
    valid = ~np.isnan(h)
    boots = np.full((len(names), len(GRADE_PROBLEMS), n_boot), np.nan)
    for part, w in count_chunks(codes.size, n_boot, as_rng(seed)):
        for j, p in np.ndindex(boots.shape[:2]):
            truth = codes[valid[j]] >= list(GRADE_PROBLEMS.values())[p]
            boots[j, p, part] = weighted_auc(sign * h[j, valid[j]], truth, w[:, valid[j]])
    rows: list[dict[str, Any]] = []
    q = [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)]
    for (j, p), (name, problem) in zip(
        np.ndindex(boots.shape[:2]), itertools.product(names, GRADE_PROBLEMS), strict=True
    ):
        score, truth = sign * h[j, valid[j]], codes[valid[j]] >= GRADE_PROBLEMS[problem]
        point = auc(score, truth)
        row: dict[str, Any] = {
            "method": name,
            "problem": problem,
            "n": int(score.size),
            "n_pos": point.n_pos,
            "n_neg": point.n_neg,
            "n_missing": int((~has_grade).sum() + (~valid[j]).sum()),
            "auc": point.value,
            "auc_lo": np.nan,
            "auc_hi": np.nan,
            "n_boot_used": 0,
            "note": f"skipped: {point.note}" if point.note else "",
        }
        ok = ~np.isnan(boots[j, p])
        if not point.note and ok.any():
            row["n_boot_used"] = int(ok.sum())
            row["auc_lo"], row["auc_hi"] = (float(x) for x in np.percentile(boots[j, p, ok], q))
        if not point.note and not ok.all():
            row["note"] = f"{int((~ok).sum())} of {n_boot} resamples had one class"
        rows.append(row)
    schema = pa.schema(
        [("method", pa.string()), ("problem", pa.string())]
        + [(c, pa.int64()) for c in ("n", "n_pos", "n_neg", "n_missing")]
        + [(c, pa.float64()) for c in ("auc", "auc_lo", "auc_hi")]
        + [("n_boot_used", pa.int64()), ("note", pa.string())]
    )
    return pa.Table.from_pylist(rows, schema=schema)
