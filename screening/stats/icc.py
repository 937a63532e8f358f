"""Intraclass correlation ICC(2,1) of Shrout & Fleiss (1979), which McGraw & Wong (1996) call
ICC(A,1): two-way random effects, absolute agreement, single measures — SPSS's "two-way random,
absolute agreement, single measures" — with the F-based confidence interval SPSS reports.

Degenerate input (fewer than :data:`MIN_N` complete subjects, no variation) gives NaN values
with a ``note`` saying why; scipy's warnings never leak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError

__all__ = ["MIN_N", "IccResult", "icc_2_1"]

#: Fewest complete subjects (pairs) for which statistics are computed.
MIN_N = 3

NAN = math.nan
EPS = float(np.finfo(np.float64).eps)


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
    ms_rows: float = NAN
    ms_cols: float = NAN
    ms_error: float = NAN
    note: str | None = None


def finite_or_nan(x: NDArray[np.float64], name: str) -> None:
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
    finite_or_nan(y, "ratings")
    complete = ~np.isnan(y).any(axis=1)
    n_dropped = int((~complete).sum())
    y = y[complete]
    n, k = y.shape
    df1, df2 = float(n - 1), float((n - 1) * (k - 1))
    msr = msc = mse = NAN

    def result(icc: float, lo: float, hi: float, f: float, p: float, note: str | None) -> IccResult:
        return IccResult(icc, lo, hi, f, df1, df2, p, n, k, n_dropped, msr, msc, mse, note)

    if n < MIN_N:
        note = f"ICC needs at least {MIN_N} complete subjects, got {n}"
        return result(NAN, NAN, NAN, NAN, NAN, note)

    grand = float(y.mean())
    row_means, col_means = y.mean(axis=1), y.mean(axis=0)
    ss_rows = float(k * np.sum((row_means - grand) ** 2))
    ss_cols = float(n * np.sum((col_means - grand) ** 2))
    resid = y - row_means[:, None] - col_means[None, :] + grand
    ss_err = float(np.sum(resid**2))
    # Rounding leaves ~eps·|HU| where the exact value is 0 (identical raters): snap to 0.
    tol = n * k * (16 * EPS * float(np.max(np.abs(y)))) ** 2
    ss_rows, ss_cols, ss_err = (0.0 if s <= tol else s for s in (ss_rows, ss_cols, ss_err))
    msr, msc, mse = ss_rows / df1, ss_cols / (k - 1), ss_err / df2
    if mse == 0 and msr == 0:
        return result(NAN, NAN, NAN, NAN, NAN, "no variation between subjects: ICC undefined")
    if mse == 0 and msc == 0:
        return result(1.0, 1.0, 1.0, math.inf, 0.0, "perfect agreement (all raters identical)")
    icc = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    f_stat = msr / mse if mse > 0 else math.inf
    p = float(f_dist.sf(f_stat, df1, df2))

    alpha = 1 - confidence
    a = k * icc / (n * (1 - icc))
    b = 1 + k * icc * (n - 1) / (n * (1 - icc))
    v_den = (a * msc) ** 2 / (k - 1) + (b * mse) ** 2 / df2
    v = (a * msc + b * mse) ** 2 / v_den if v_den > 0 else NAN
    if not (math.isfinite(v) and v > 0):
        return result(icc, NAN, NAN, f_stat, p, "confidence interval undefined (df <= 0)")
    f_hi = float(f_dist.isf(alpha / 2, df1, v))
    f_lo = float(f_dist.isf(alpha / 2, v, df1))
    c = k * msc + (k * n - k - n) * mse
    lo = n * (msr - f_hi * mse) / (f_hi * c + n * msr)
    hi = n * (f_lo * msr - mse) / (c + n * f_lo * msr)
    return result(float(icc), float(lo), float(hi), float(f_stat), p, None)
