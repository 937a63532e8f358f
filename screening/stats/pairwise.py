"""Agreement of two paired series of liver attenuation (HU): :func:`pair_agreement` gives every
statistic of one AI-vs-reader (or reader-vs-reader) comparison — MSE, KS, Spearman, ICC(2,1),
Bland–Altman with confidence limits, paired t and Wilcoxon tests.

Statistics that a degenerate input makes undefined (fewer than 3 complete pairs, a constant
series, identical series) are NaN and the ``note`` says why; scipy's warnings never leak.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError
from screening.stats.icc import EPS, MIN_N, NAN, finite_or_nan, icc_2_1

__all__ = ["LOA_Z", "WILCOXON_ZERO_METHOD", "pair_agreement"]

#: Zero differences in the Wilcoxon signed-rank test: Pratt (1959) ranks them with the others and
#: then drops their ranks, so exact ties (reads are rounded to 0.1 HU) still count as agreement.
WILCOXON_ZERO_METHOD = "pratt"

#: Bland–Altman limits of agreement are bias ± this many SDs (Bland & Altman's 1.96).
LOA_Z = 1.96

_T = TypeVar("_T")


def is_constant(x: NDArray[np.float64]) -> bool:
    return bool(np.ptp(x) <= 16 * EPS * float(np.max(np.abs(x))))


def quietly(fn: Callable[[], _T], label: str, notes: list[str]) -> _T | None:
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
    out: dict[str, Any] = dict.fromkeys(_PAIR_KEYS, NAN)
    out.update(n=n, n_missing=n_missing, note=note)
    return out


def paired_finite(
    a: ArrayLike, b: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ConfigError(
            f"a and b must be 1-D arrays of the same length (one value per subject, NaN where "
            f"missing); got shapes {x.shape} and {y.shape}"
        )
    finite_or_nan(x, "a")
    finite_or_nan(y, "b")
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
    x, y, n_missing = paired_finite(a, b)
    n = int(x.size)
    if n < MIN_N:
        return _empty_pair(n, n_missing, f"fewer than {MIN_N} complete pairs (n={n})")
    notes: list[str] = []
    d = x - y
    mean_d = float(d.mean())
    sd_d = float(d.std(ddof=1))
    out: dict[str, Any] = dict.fromkeys(_PAIR_KEYS, NAN)
    out.update(n=n, n_missing=n_missing, mse=float(np.mean(d**2)), mean_diff=mean_d, sd_diff=sd_d)

    ks = quietly(lambda: stats.ks_2samp(x, y), "KS two-sample", notes)
    if ks is not None:
        out.update(ks_stat=float(ks.statistic), ks_p=float(ks.pvalue))

    const = {"a": is_constant(x), "b": is_constant(y)}
    for name, series in (("a", x), ("b", y)):
        if const[name]:
            notes.append(f"{name} is constant: its normality test is undefined")
            continue
        loc, scale = float(series.mean()), float(series.std(ddof=1))
        res = quietly(
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
        rho = quietly(lambda: stats.spearmanr(x, y), "Spearman", notes)
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
    elif is_constant(d):
        notes.append("the differences are constant: paired t-test undefined")
        w = quietly(lambda: stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD), "Wilcoxon", notes)
        out["wilcoxon_p"] = NAN if w is None else float(w.pvalue)
    else:
        t = quietly(lambda: stats.ttest_rel(x, y), "paired t-test", notes)
        w = quietly(lambda: stats.wilcoxon(d, zero_method=WILCOXON_ZERO_METHOD), "Wilcoxon", notes)
        out["t_p"] = NAN if t is None else float(t.pvalue)
        out["wilcoxon_p"] = NAN if w is None else float(w.pvalue)
    out["note"] = "; ".join(notes) or None
    return out
