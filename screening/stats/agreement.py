"""Agreement of liver attenuation between AI methods and expert readers (the paper's Table 1).

Pure functions on arrays of Hounsfield units, in their own modules and re-exported here:

- :func:`icc_2_1` (:mod:`screening.stats.icc`): ICC(2,1) of Shrout & Fleiss (1979), which
  McGraw & Wong (1996) call ICC(A,1): two-way random effects, absolute agreement, single
  measures — SPSS's "two-way random, absolute agreement, single measures" — with the F-based
  confidence interval SPSS reports.
- :func:`pair_agreement` (:mod:`screening.stats.pairwise`): every statistic of one AI-vs-reader
  (or reader-vs-reader) comparison.

Thin wrappers over a long Arrow table (one row per scan × reader) build the report tables:
:func:`agreement_table` (one row per method × reader, reader pairs, multi-rater ICCs) and
:func:`reader_matrix` (all raters against all raters, for a heat map).

Statistics that a degenerate input makes undefined (fewer than 3 complete pairs, a constant
series, identical series) are NaN (null in the Arrow tables) and the ``note`` says why;
scipy's warnings never leak.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from screening.config import require
from screening.constants import METHOD_COLUMNS
from screening.errors import ConfigError
from screening.stats.icc import MIN_N, NAN, IccResult, icc_2_1
from screening.stats.pairwise import LOA_Z as LOA_Z
from screening.stats.pairwise import (
    WILCOXON_ZERO_METHOD,
    is_constant,
    pair_agreement,
    paired_finite,
    quietly,
)

__all__ = [
    "AGREEMENT_COLUMNS",
    "DEFAULT_METHODS",
    "MIN_N",
    "WILCOXON_ZERO_METHOD",
    "IccResult",
    "agreement_table",
    "icc_2_1",
    "pair_agreement",
    "reader_matrix",
]

#: AI method name -> measurements column holding its liver attenuation (HU).
DEFAULT_METHODS: Mapping[str, str] = METHOD_COLUMNS

#: Columns of :func:`agreement_table`, in order.
AGREEMENT_COLUMNS: tuple[str, ...] = (
    "method",
    "reader",
    "n",
    "k",
    "icc",
    "icc_lo",
    "icc_hi",
    "spearman",
    "spearman_p",
    "mse",
    "mean_diff",
    "sd_diff",
    "ks_stat",
    "ks_p",
    "ks_norm_p_method",
    "ks_norm_p_reader",
    "ba_bias",
    "ba_loa_lo",
    "ba_loa_hi",
    "t_p",
    "wilcoxon_p",
    "note",
)


# --- wrappers over Arrow tables -----------------------------------------------------------


@dataclass(frozen=True)
class _Wide:
    """Reads and AI values pivoted to one row per scan."""

    keys: list[Any]
    readers: list[str]
    reads: NDArray[np.float64]  # (n_keys, n_readers), NaN where not read
    methods: dict[str, NDArray[np.float64]]  # name -> (n_keys,)


def _column_values(values: pa.Table, name: str) -> list[Any]:
    return list(values.column(name).to_pylist())


def _floats(raw: list[Any], column: str) -> NDArray[np.float64]:
    try:
        return np.array([NAN if v is None else float(v) for v in raw], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"column {column!r} must hold numbers (HU); got a value that is not: {e}. Cast it "
            "to float64 before computing agreement."
        ) from e


def _pivot(
    values: pa.Table, methods: Mapping[str, str], reader_col: str, read_col: str, key: str
) -> _Wide:
    needed = [key, reader_col, read_col, *methods.values()]
    missing = [c for c in dict.fromkeys(needed) if c not in values.column_names]
    if missing:
        raise ConfigError(
            f"the agreement input lacks column(s) {missing}; received {values.column_names}. "
            f"Expected one row per scan × reader with {key!r}, {reader_col!r}, {read_col!r} and "
            f"the AI columns {sorted(methods.values())}: join the reads to the measurements on "
            f"{key!r}, or pass methods=/reader_col=/read_col=/key= naming your columns."
        )
    reserved = sorted(m for m in methods if m.startswith("reader"))
    require(not reserved, f"method names may not start with 'reader' (reserved): {reserved}")
    keys = _column_values(values, key)
    readers_raw = _column_values(values, reader_col)
    reads_raw = _floats(_column_values(values, read_col), read_col)
    method_raw = {m: _floats(_column_values(values, c), c) for m, c in methods.items()}

    index: dict[Any, int] = {}
    for k in keys:
        if k is None:
            raise ConfigError(f"column {key!r} holds nulls; every row needs its scan key")
        index.setdefault(k, len(index))
    readers = sorted({str(r) for r in readers_raw if r is not None})
    clash = sorted(set(readers) & set(methods))
    if clash:
        raise ConfigError(
            f"reader name(s) {clash} are also AI method names; rename the readers or the methods"
        )
    col = {r: j for j, r in enumerate(readers)}
    reads = np.full((len(index), len(readers)), NAN)
    seen: dict[tuple[Any, str], int] = {}
    dups: list[str] = []
    for row, (k, r, v) in enumerate(zip(keys, readers_raw, reads_raw, strict=True)):
        if r is None:
            continue
        if (k, str(r)) in seen:
            dups.append(f"({k!r}, {r!r}) at rows {seen[(k, str(r))]} and {row} (0-based)")
            continue
        seen[(k, str(r))] = row
        reads[index[k], col[str(r)]] = v
    if dups:
        raise ConfigError(
            f"{len(dups)} duplicate ({key}, {reader_col}) row(s), e.g. {'; '.join(dups[:3])}; "
            "expected one read per scan and reader. Average or drop repeated reads first."
        )

    per_key: dict[str, NDArray[np.float64]] = {}
    for m, raw in method_raw.items():
        vals = np.full(len(index), NAN)
        for k, v in zip(keys, raw, strict=True):
            i = index[k]
            if np.isnan(vals[i]):
                vals[i] = v
            elif not np.isnan(v) and not math.isclose(vals[i], v, rel_tol=1e-9, abs_tol=1e-9):
                raise ConfigError(
                    f"scan {k!r} has different {methods[m]!r} values on different rows "
                    f"({vals[i]} and {v}); the AI value must be the same on each reader's row. "
                    "Check the join (one measurements row per scan: filter on pipeline_id)."
                )
        per_key[m] = vals
    return _Wide(list(index), readers, reads, per_key)


def _multi_row(
    method: str, reader: str, ratings: NDArray[np.float64], names: Sequence[str]
) -> dict[str, Any]:
    icc = icc_2_1(ratings)
    note = (
        f"ICC(2,1) over {len(names)} raters ({', '.join(names)}); complete cases only"
        f" ({icc.n_dropped} scans with a missing rating dropped)"
    )
    if icc.note:
        note += f"; {icc.note}"
    row: dict[str, Any] = dict.fromkeys(AGREEMENT_COLUMNS, NAN)
    row.update(
        method=method,
        reader=reader,
        n=icc.n,
        k=len(names),
        icc=icc.icc,
        icc_lo=icc.ci_lo,
        icc_hi=icc.ci_hi,
        note=note,
    )
    return row


def _pair_row(
    method: str, reader: str, a: NDArray[np.float64], b: NDArray[np.float64]
) -> dict[str, Any]:
    r = pair_agreement(a, b)
    row = {c: r.get(c, NAN) for c in AGREEMENT_COLUMNS}
    row.update(
        method=method,
        reader=reader,
        k=2,
        ks_norm_p_method=r["ks_norm_p_a"],
        ks_norm_p_reader=r["ks_norm_p_b"],
    )
    return row


def _core_pair(a: NDArray[np.float64], b: NDArray[np.float64]) -> dict[str, Any]:
    """n, ICC, Spearman and mean difference only (the heat map needs no tests)."""
    from scipy.stats import spearmanr

    x, y, _ = paired_finite(a, b)
    out: dict[str, Any] = {"n": int(x.size), "icc": NAN, "spearman": NAN, "mean_diff": NAN}
    if x.size < MIN_N:
        return out
    out.update(icc=icc_2_1(np.column_stack([x, y])).icc, mean_diff=float(np.mean(x - y)))
    if not (is_constant(x) or is_constant(y)):
        rho = quietly(lambda: spearmanr(x, y), "Spearman", [])
        out["spearman"] = NAN if rho is None else float(rho.statistic)
    return out


def _to_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> pa.Table:
    types = {
        "method": pa.string(),
        "reader": pa.string(),
        "rater_a": pa.string(),
        "rater_b": pa.string(),
        "note": pa.string(),
        "n": pa.int64(),
        "k": pa.int64(),
    }
    arrays = [
        pa.array([r[c] for r in rows], type=types.get(c, pa.float64()), from_pandas=True)
        for c in columns
    ]
    return pa.Table.from_arrays(arrays, names=list(columns))


def agreement_table(
    values: pa.Table,
    *,
    methods: Mapping[str, str] = DEFAULT_METHODS,
    reader_col: str = "reader",
    read_col: str = "roi_hu",
    key: str = "scan_id",
) -> pa.Table:
    """Agreement of each AI method with each reader, of the readers with each other, and
    multi-rater ICCs: the paper's Table 1 as an Arrow table.

    Parameters
    ----------
    values : pyarrow.Table
        Long table joined by the caller: one row per scan × reader, holding ``key``,
        ``reader_col``, the reader's attenuation ``read_col`` (HU) and each AI column of
        ``methods`` (HU, repeated on every reader's row of a scan). Rows with a null reader
        contribute AI values only.
    methods
        AI method name -> column of ``values`` with its liver attenuation (HU).
    reader_col, read_col, key
        Column names of the reader, the reader's value (HU) and the scan key.

    Returns
    -------
    pyarrow.Table
        Columns :data:`AGREEMENT_COLUMNS`. Rows, in order:

        - ``(method, reader)`` for each method and reader: :func:`pair_agreement` of the AI
          value (first series) and the read, so ``mean_diff`` = AI − reader;
        - ``(method, "readers:all")`` per method: ICC(2,1) over all readers plus the method;
        - ``("reader:<A>", "<B>")`` for each pair of readers A < B: reader A − reader B;
        - ``("readers:all", "all")``: ICC(2,1) over all readers (when there are >= 2).

        ``k`` is the number of raters in the ICC. Multi-rater rows use complete cases (scans
        every rater read), as SPSS does; their pairwise columns are null. Undefined
        statistics are null (not NaN), and ``note`` says why.

    Raises
    ------
    ConfigError
        A column is missing, a (key, reader) pair repeats, or a scan's AI value differs
        between its rows.
    """
    wide = _pivot(values, methods, reader_col, read_col, key)
    rows: list[dict[str, Any]] = []
    for m, ai in wide.methods.items():
        for j, reader in enumerate(wide.readers):
            rows.append(_pair_row(m, reader, ai, wide.reads[:, j]))
        if wide.readers:
            ratings = np.column_stack([ai, wide.reads])
            rows.append(_multi_row(m, "readers:all", ratings, [m, *wide.readers]))
    for (i, ra), (j, rb) in itertools.combinations(enumerate(wide.readers), 2):
        rows.append(_pair_row(f"reader:{ra}", rb, wide.reads[:, i], wide.reads[:, j]))
    if len(wide.readers) >= 2:
        rows.append(_multi_row("readers:all", "all", wide.reads, wide.readers))
    return _to_table(rows, AGREEMENT_COLUMNS)


def reader_matrix(
    values: pa.Table,
    *,
    methods: Mapping[str, str] = DEFAULT_METHODS,
    reader_col: str = "reader",
    read_col: str = "roi_hu",
    key: str = "scan_id",
) -> pa.Table:
    """All raters (AI methods, then readers) against all raters, long form, for a heat map.

    Parameters are those of :func:`agreement_table`.

    Returns
    -------
    pyarrow.Table
        One row per ordered pair ``(rater_a, rater_b)``, the diagonal included: ``n`` complete
        pairs, ``icc`` (ICC(2,1)), ``spearman`` and ``mean_diff`` (rater_a − rater_b, HU).
        Undefined values are null (fewer than :data:`MIN_N` pairs; a constant series has no
        Spearman correlation).
    """
    wide = _pivot(values, methods, reader_col, read_col, key)
    raters: dict[str, NDArray[np.float64]] = dict(wide.methods)
    raters.update({r: wide.reads[:, j] for j, r in enumerate(wide.readers)})
    rows = [
        {"rater_a": ra, "rater_b": rb, **_core_pair(raters[ra], raters[rb])}
        for ra, rb in itertools.product(raters, repeat=2)
    ]
    return _to_table(rows, ("rater_a", "rater_b", "n", "icc", "spearman", "mean_diff"))
