"""Agreement of liver attenuation between AI methods and expert readers (the paper's Table 1).

Pure functions on arrays of Hounsfield units come first:

- :func:`icc_2_1`: ICC(2,1) of Shrout & Fleiss (1979), which McGraw & Wong (1996) call ICC(A,1):
  two-way random effects, absolute agreement, single measures — SPSS's "two-way random, absolute
  agreement, single measures" — with the F-based confidence interval SPSS reports.
- :func:`pair_agreement`: every statistic of one AI-vs-reader (or reader-vs-reader) comparison.

Thin wrappers over a long Arrow table (one row per scan × reader) build the report tables:
:func:`agreement_table` (one row per method × reader, reader pairs, multi-rater ICCs) and
:func:`reader_matrix` (all raters against all raters, for a heat map).

Statistics that a degenerate input makes undefined (fewer than 3 complete pairs, a constant
series, identical series) are NaN (null in the Arrow tables) and the ``note`` says why;
scipy's warnings never leak.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError

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
DEFAULT_METHODS: Mapping[str, str] = {
    "ai_3d": "liver_hu_3d",
    "ai_2d": "liver_hu_2d",
    "ai_roi": "liver_hu_roi",
}

#: Fewest complete subjects (pairs) for which statistics are computed.
MIN_N = 3

#: Zero differences in the Wilcoxon signed-rank test: Pratt (1959) ranks them with the others and
#: then drops their ranks, so exact ties (reads are rounded to 0.1 HU) still count as agreement.
WILCOXON_ZERO_METHOD = "pratt"

#: Bland–Altman limits of agreement are bias ± this many SDs (Bland & Altman's 1.96).
LOA_Z = 1.96

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

_NAN = math.nan
_EPS = float(np.finfo(np.float64).eps)
_T = TypeVar("_T")


@dataclass(frozen=True)
class IccResult:
    """ICC(2,1) (= ICC(A,1)) with its confidence interval and F test of ICC = 0.

    Attributes
    ----------
    icc
        Point estimate (unitless; 1 = perfect absolute agreement).
    ci_lo, ci_hi
        Confidence limits (McGraw & Wong 1996, Table 7, case 2A; what SPSS reports).
    f, df1, df2, p
        F test of H0: ICC = 0: ``F = MS_rows / MS_error`` on ``(n - 1, (n - 1)(k - 1))`` df.
    n
        Complete subjects used (rows without any NaN).
    k
        Raters (columns).
    n_dropped
        Subjects dropped because at least one rating was NaN (listwise, as SPSS does).
    ms_rows, ms_cols, ms_error
        Two-way ANOVA mean squares (HU²): subjects, raters, residual.
    note
        Why a value is NaN or special (``None`` when nothing is to be said).
    """

    icc: float
    ci_lo: float
    ci_hi: float
    f: float
    df1: float
    df2: float
    p: float
    n: int = 0
    k: int = 0
    n_dropped: int = 0
    ms_rows: float = _NAN
    ms_cols: float = _NAN
    ms_error: float = _NAN
    note: str | None = None


def _finite_or_nan(x: NDArray[np.float64], name: str) -> None:
    if np.isinf(x).any():
        raise ConfigError(
            f"{name} holds {int(np.isinf(x).sum())} infinite value(s); expected finite HU with "
            "NaN for a missing value. Replace the infinities by NaN (or fix their source)."
        )


def icc_2_1(ratings: ArrayLike, *, confidence: float = 0.95) -> IccResult:
    """ICC(2,1): two-way random effects, absolute agreement, single measures.

    Shrout & Fleiss (1979) ICC(2,1), McGraw & Wong (1996) ICC(A,1)::

        ICC = (MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)

    with MSR, MSC, MSE the subjects, raters and residual mean squares of the two-way ANOVA
    without replication. The confidence interval is McGraw & Wong's (1996, Table 7, case 2A;
    SPSS's): with ``a = k ρ / (n (1 - ρ))``, ``b = 1 + k ρ (n - 1) / (n (1 - ρ))`` (ρ the
    estimate) and Satterthwaite's ``v = (a MSC + b MSE)² / ((a MSC)² / (k - 1) +
    (b MSE)² / ((n - 1)(k - 1)))``, ``F* = F(1 - α/2; n - 1, v)`` and
    ``F_* = F(1 - α/2; v, n - 1)``::

        lo = n (MSR - F* MSE) / (F* (k MSC + (k n - k - n) MSE) + n MSR)
        hi = n (F_* MSR - MSE) / (k MSC + (k n - k - n) MSE + n F_* MSR)

    Parameters
    ----------
    ratings : array_like, shape (n_subjects, k_raters), HU
        One row per subject, one column per rater (k >= 2). Rows holding any NaN are dropped
        (counted in ``n_dropped``).
    confidence
        Coverage of the interval, in (0, 1).

    Returns
    -------
    IccResult
        NaN values with a ``note`` when fewer than :data:`MIN_N` complete rows remain or all
        ratings are equal. Perfect agreement (every rater gives each subject the same value)
        gives ICC = 1 with the interval [1, 1].

    Examples
    --------
    >>> r = icc_2_1([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
    ...              [6, 2, 4, 7]])  # Shrout & Fleiss (1979), Table 2
    >>> round(r.icc, 2), r.df1, r.df2
    (0.29, 5.0, 15.0)
    """
    from scipy.stats import f as f_dist

    require(0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}")
    y = np.asarray(ratings, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 2:
        raise ConfigError(
            f"ratings must be a 2-D array (n_subjects, k_raters) with k >= 2; got shape "
            f"{y.shape}. Put one rater per column (numpy.column_stack([a, b]))."
        )
    _finite_or_nan(y, "ratings")
    complete = ~np.isnan(y).any(axis=1)
    n_dropped = int((~complete).sum())
    y = y[complete]
    n, k = y.shape
    df1, df2 = float(n - 1), float((n - 1) * (k - 1))
    msr = msc = mse = _NAN

    def result(icc: float, lo: float, hi: float, f: float, p: float, note: str | None) -> IccResult:
        return IccResult(icc, lo, hi, f, df1, df2, p, n, k, n_dropped, msr, msc, mse, note)

    if n < MIN_N:
        note = f"ICC needs at least {MIN_N} complete subjects, got {n}"
        return result(_NAN, _NAN, _NAN, _NAN, _NAN, note)

    grand = float(y.mean())
    row_means, col_means = y.mean(axis=1), y.mean(axis=0)
    ss_rows = float(k * np.sum((row_means - grand) ** 2))
    ss_cols = float(n * np.sum((col_means - grand) ** 2))
    resid = y - row_means[:, None] - col_means[None, :] + grand
    ss_err = float(np.sum(resid**2))
    # Rounding leaves ~eps·|HU| where the exact value is 0 (identical raters): snap to 0.
    tol = n * k * (16 * _EPS * float(np.max(np.abs(y)))) ** 2
    ss_rows, ss_cols, ss_err = (0.0 if s <= tol else s for s in (ss_rows, ss_cols, ss_err))
    msr, msc, mse = ss_rows / df1, ss_cols / (k - 1), ss_err / df2
    if mse == 0 and msr == 0:
        return result(_NAN, _NAN, _NAN, _NAN, _NAN, "no variation between subjects: ICC undefined")
    if mse == 0 and msc == 0:
        return result(1.0, 1.0, 1.0, math.inf, 0.0, "perfect agreement (all raters identical)")
    icc = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    f_stat = msr / mse if mse > 0 else math.inf
    p = float(f_dist.sf(f_stat, df1, df2))

    alpha = 1 - confidence
    a = k * icc / (n * (1 - icc))
    b = 1 + k * icc * (n - 1) / (n * (1 - icc))
    v_den = (a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / df2
    v = (a * msc + b * mse) ** 2 / v_den if v_den > 0 else _NAN
    if not (math.isfinite(v) and v > 0):
        return result(icc, _NAN, _NAN, f_stat, p, "confidence interval undefined (df <= 0)")
    f_hi = float(f_dist.isf(alpha / 2, df1, v))
    f_lo = float(f_dist.isf(alpha / 2, v, df1))
    c = k * msc + (k * n - k - n) * mse
    lo = n * (msr - f_hi * mse) / (f_hi * c + n * msr)
    hi = n * (f_lo * msr - mse) / (c + n * f_lo * msr)
    return result(float(icc), float(lo), float(hi), float(f_stat), p, None)


def _is_constant(x: NDArray[np.float64]) -> bool:
    return bool(np.ptp(x) <= 16 * _EPS * float(np.max(np.abs(x))))


def _quiet(fn: Callable[[], _T], label: str, notes: list[str]) -> _T | None:
    """Call ``fn``; turn its warnings and ValueErrors into notes instead of letting them out."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except (ValueError, FloatingPointError) as e:
            notes.append(f"{label}: {e}")
            return None
    for w in caught:
        notes.append(f"{label}: {w.message}")
    return out


def _empty_pair(n: int, n_missing: int, note: str) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(_PAIR_KEYS, _NAN)
    out.update(n=n, n_missing=n_missing, note=note)
    return out


def _paired(a: ArrayLike, b: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ConfigError(
            f"a and b must be 1-D arrays of the same length (one value per subject, NaN where "
            f"missing); got shapes {x.shape} and {y.shape}"
        )
    _finite_or_nan(x, "a")
    _finite_or_nan(y, "b")
    ok = ~(np.isnan(x) | np.isnan(y))
    return x[ok], y[ok], int((~ok).sum())


_PAIR_KEYS: tuple[str, ...] = (
    "n",
    "n_missing",
    "mse",
    "mean_diff",
    "sd_diff",
    "ks_stat",
    "ks_p",
    "ks_norm_p_a",
    "ks_norm_p_b",
    "spearman",
    "spearman_p",
    "icc",
    "icc_lo",
    "icc_hi",
    "icc_f",
    "icc_p",
    "ba_bias",
    "ba_bias_lo",
    "ba_bias_hi",
    "ba_sd",
    "ba_loa_lo",
    "ba_loa_hi",
    "ba_loa_lo_ci_lo",
    "ba_loa_lo_ci_hi",
    "ba_loa_hi_ci_lo",
    "ba_loa_hi_ci_hi",
    "t_p",
    "wilcoxon_p",
    "note",
)


def pair_agreement(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> dict[str, Any]:
    """Agreement of two paired series of liver attenuation (e.g. AI-ROI vs one reader).

    Only complete pairs are used (both values not NaN). Differences are ``a - b``.

    Parameters
    ----------
    a, b : array_like, shape (n,), HU
        Paired measurements of the same subjects; NaN marks a missing value.
    confidence
        Coverage of the ICC and Bland–Altman confidence intervals.

    Returns
    -------
    dict
        ``n`` (complete pairs), ``n_missing`` (pairs with a NaN);
        ``mse`` (HU², mean squared difference), ``mean_diff`` and ``sd_diff`` (HU; sd with
        n - 1);
        ``ks_stat``, ``ks_p``: two-sample Kolmogorov–Smirnov (:func:`scipy.stats.ks_2samp`):
        do ``a`` and ``b`` follow the same distribution;
        ``ks_norm_p_a``, ``ks_norm_p_b``: one-sample KS test of each series against a normal
        with that series' own mean and sd, as the paper did. Estimating the parameters from the
        same sample makes this test conservative (p too large; the Lilliefors correction fixes
        it), so read a small p as evidence against normality, but a large p as weak evidence;
        ``spearman``, ``spearman_p``: Spearman's rho (ties get average ranks) and its p;
        ``icc``, ``icc_lo``, ``icc_hi``, ``icc_f``, ``icc_p``: :func:`icc_2_1` of the pair;
        ``ba_bias`` (= mean_diff), ``ba_bias_lo``/``ba_bias_hi`` (t interval), ``ba_sd``
        (= sd_diff), ``ba_loa_lo``/``ba_loa_hi`` (bias ∓ 1.96 sd, HU) and the confidence
        limits of each limit of agreement (``ba_loa_lo_ci_lo`` ...), Bland & Altman (1999):
        limit ± t(1 - α/2; n - 1) · sd · sqrt(1/n + 1.96² / (2 (n - 1)));
        ``t_p``: paired t-test; ``wilcoxon_p``: Wilcoxon signed-rank test of the differences
        with zero differences handled by Pratt's method (:data:`WILCOXON_ZERO_METHOD`);
        ``note``: why any statistic is NaN (``None`` when none is).

    Notes
    -----
    With fewer than :data:`MIN_N` complete pairs every statistic is NaN. A constant series
    makes the correlation and its normality test NaN; identical series (all differences 0) or
    a constant difference make the paired tests NaN. The note names each case.

    Examples
    --------
    >>> r = pair_agreement([40.0, 52.0, 61.0, 35.0], [42.0, 50.0, 63.0, 36.0])
    >>> r["n"], r["mean_diff"], r["spearman"]
    (4, -0.75, 1.0)
    """
    from scipy import stats

    require(0 < confidence < 1, f"confidence must be in (0, 1), got {confidence}")
    x, y, n_missing = _paired(a, b)
    n = int(x.size)
    if n < MIN_N:
        return _empty_pair(n, n_missing, f"fewer than {MIN_N} complete pairs (n={n})")
    notes: list[str] = []
    d = x - y
    mean_d = float(d.mean())
    sd_d = float(d.std(ddof=1))
    out: dict[str, Any] = dict.fromkeys(_PAIR_KEYS, _NAN)
    out.update(n=n, n_missing=n_missing, mse=float(np.mean(d**2)), mean_diff=mean_d, sd_diff=sd_d)

    ks = _quiet(lambda: stats.ks_2samp(x, y), "KS two-sample", notes)
    if ks is not None:
        out.update(ks_stat=float(ks.statistic), ks_p=float(ks.pvalue))

    const = {"a": _is_constant(x), "b": _is_constant(y)}
    for name, series in (("a", x), ("b", y)):
        if const[name]:
            notes.append(f"{name} is constant: its normality test is undefined")
            continue
        loc, scale = float(series.mean()), float(series.std(ddof=1))
        res = _quiet(
            functools.partial(stats.kstest, series, "norm", args=(loc, scale)),
            f"KS normality of {name}",
            notes,
        )
        if res is not None:
            out[f"ks_norm_p_{name}"] = float(res.pvalue)

    if const["a"] or const["b"]:
        which = [k for k, v in const.items() if v]
        verb = "is" if len(which) == 1 else "are"
        notes.append(f"{' and '.join(which)} {verb} constant: Spearman correlation undefined")
    else:
        rho = _quiet(lambda: stats.spearmanr(x, y), "Spearman", notes)
        if rho is not None:
            out.update(spearman=float(rho.statistic), spearman_p=float(rho.pvalue))

    icc = icc_2_1(np.column_stack([x, y]), confidence=confidence)
    out.update(icc=icc.icc, icc_lo=icc.ci_lo, icc_hi=icc.ci_hi, icc_f=icc.f, icc_p=icc.p)
    if icc.note and not math.isfinite(icc.icc):
        notes.append(f"ICC: {icc.note}")

    alpha = 1 - confidence
    t_q = float(stats.t.isf(alpha / 2, n - 1))
    se_bias = sd_d / math.sqrt(n)
    se_loa = sd_d * math.sqrt(1 / n + LOA_Z**2 / (2 * (n - 1)))
    loa_lo, loa_hi = mean_d - LOA_Z * sd_d, mean_d + LOA_Z * sd_d
    out.update(
        ba_bias=mean_d,
        ba_bias_lo=mean_d - t_q * se_bias,
        ba_bias_hi=mean_d + t_q * se_bias,
        ba_sd=sd_d,
        ba_loa_lo=loa_lo,
        ba_loa_hi=loa_hi,
        ba_loa_lo_ci_lo=loa_lo - t_q * se_loa,
        ba_loa_lo_ci_hi=loa_lo + t_q * se_loa,
        ba_loa_hi_ci_lo=loa_hi - t_q * se_loa,
        ba_loa_hi_ci_hi=loa_hi + t_q * se_loa,
    )

    if not np.any(d):
        notes.append("all differences are 0 (identical series): paired tests undefined")
    elif _is_constant(d):
        notes.append("the differences are constant: paired t-test undefined")
        w = _quiet(lambda: stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD), "Wilcoxon", notes)
        out["wilcoxon_p"] = _NAN if w is None else float(w.pvalue)
    else:
        t = _quiet(lambda: stats.ttest_rel(x, y), "paired t-test", notes)
        w = _quiet(lambda: stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD), "Wilcoxon", notes)
        out["t_p"] = _NAN if t is None else float(t.pvalue)
        out["wilcoxon_p"] = _NAN if w is None else float(w.pvalue)
    out["note"] = "; ".join(notes) or None
    return out


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
        return np.array([_NAN if v is None else float(v) for v in raw], dtype=np.float64)
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
    reads = np.full((len(index), len(readers)), _NAN)
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
        vals = np.full(len(index), _NAN)
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
    row: dict[str, Any] = dict.fromkeys(AGREEMENT_COLUMNS, _NAN)
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
    row = {c: r.get(c, _NAN) for c in AGREEMENT_COLUMNS}
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

    x, y, _ = _paired(a, b)
    out: dict[str, Any] = {"n": int(x.size), "icc": _NAN, "spearman": _NAN, "mean_diff": _NAN}
    if x.size < MIN_N:
        return out
    out.update(icc=icc_2_1(np.column_stack([x, y])).icc, mean_diff=float(np.mean(x - y)))
    if not (_is_constant(x) or _is_constant(y)):
        rho = _quiet(lambda: spearmanr(x, y), "Spearman", [])
        out["spearman"] = _NAN if rho is None else float(rho.statistic)
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
