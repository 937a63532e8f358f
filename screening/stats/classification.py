"""Steatosis classification: AUC, sensitivity and specificity with paired bootstrap 95% CIs.

The paper's analysis (sklearn.metrics AUC / sensitivity / specificity, 1,000 bootstrap resamples
for 95% CIs), done exactly but vectorised: one set of resample indices is drawn and shared by
every method (a *paired* bootstrap, so methods can be compared resample by resample), and every
resample is evaluated at once from the per-resample case counts.

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

import itertools
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.errors import ConfigError
from screening.reasons import SteatosisGrade

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
DEFAULT_METHODS: dict[str, str] = {
    "ai_3d": "liver_hu_3d",
    "ai_2d": "liver_hu_2d",
    "ai_roi": "liver_hu_roi",
}

#: The grade ROC problems: name -> lowest grade code counted positive (0 none ... 3 severe).
GRADE_PROBLEMS: dict[str, int] = {">= mild": 1, ">= moderate": 2, "severe": 3}

_GRADE_CODES: dict[str, int] = {g.value: i for i, g in enumerate(SteatosisGrade)}

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

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


# --------------------------------------------------------------------------------------------
# Point estimates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A scalar metric with the class counts behind it; ``value`` is NaN when undefined.

    Attributes
    ----------
    value
        The metric (AUC, sensitivity or specificity; a fraction in [0, 1]) or NaN.
    n_pos, n_neg
        Cases with ``truth`` True / False.
    note
        Empty, or why ``value`` is NaN.
    """

    value: float
    n_pos: int
    n_neg: int
    note: str = ""

    def __float__(self) -> float:
        return self.value


def _truth_1d(truth: ArrayLike, n: int | None = None) -> BoolArray:
    t = np.asarray(truth)
    if t.dtype != np.bool_:
        if t.dtype.kind not in "iuf" or not np.isin(t, (0, 1)).all():
            raise ConfigError(
                f"truth must be boolean (True = steatosis), got dtype {t.dtype}; "
                "drop missing values first or use classification_table, which drops them"
            )
        t = t.astype(np.bool_)
    if t.ndim != 1 or (n is not None and t.size != n):
        raise ConfigError(
            f"truth must be 1-D with one value per case ({n} expected), got shape {t.shape}"
        )
    return t


def _score_1d(score: ArrayLike, name: str = "score") -> FloatArray:
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1:
        raise ConfigError(f"{name} must be 1-D (one value per case), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ConfigError(
            f"{name} holds {int((~np.isfinite(s)).sum())} non-finite values; drop missing "
            "cases first (bootstrap_classification and classification_table drop NaN per method)"
        )
    return s


def _one_class_note(metric: str, n_pos: int, n_neg: int) -> str:
    if n_pos + n_neg == 0:
        return f"{metric} undefined: no cases"
    missing = "positive (steatotic)" if n_pos == 0 else "negative (non-steatotic)"
    return f"{metric} undefined: no {missing} cases ({n_pos} pos, {n_neg} neg)"


def auc(score: ArrayLike, truth: ArrayLike) -> Estimate:
    """Area under the ROC curve: the Mann–Whitney U statistic with midranks for ties.

    Parameters
    ----------
    score : ndarray, shape (n,)
        Higher = more likely steatotic. For liver attenuation pass ``-hu`` (HU): lower HU
        means more fat.
    truth : ndarray of bool, shape (n,)
        True = steatosis.

    Returns
    -------
    Estimate
        ``value`` equals ``sklearn.metrics.roc_auc_score(truth, score)``; NaN with a ``note``
        when one class is empty (sklearn would raise).

    Examples
    --------
    >>> hu = np.array([20.0, 35.0, 50.0, 60.0, 35.0])
    >>> auc(-hu, hu <= 40).value
    1.0
    """
    from scipy.stats import rankdata

    s = _score_1d(score)
    t = _truth_1d(truth, s.size)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return Estimate(float("nan"), n_pos, n_neg, _one_class_note("AUC", n_pos, n_neg))
    u = float(rankdata(s)[t].sum()) - n_pos * (n_pos + 1) / 2.0
    return Estimate(u / (n_pos * n_neg), n_pos, n_neg)


def confusion(pred: ArrayLike, truth: ArrayLike) -> tuple[int, int, int, int]:
    """Confusion counts ``(tp, fp, tn, fn)`` of boolean predictions against the truth.

    Parameters
    ----------
    pred : ndarray of bool, shape (n,)
        The test's call, e.g. ``hu <= 40.0`` (HU).
    truth : ndarray of bool, shape (n,)
        True = steatosis.
    """
    p = _truth_1d(pred)
    t = _truth_1d(truth, p.size)
    tp = int((p & t).sum())
    fp = int((p & ~t).sum())
    fn = int(t.sum()) - tp
    tn = p.size - tp - fp - fn
    return tp, fp, tn, fn


def sensitivity(pred: ArrayLike, truth: ArrayLike) -> Estimate:
    """TP / (TP + FN): share of steatotic cases called positive; NaN with a note if none.

    ``pred`` and ``truth`` are boolean arrays, shape (n,); see :func:`confusion`.
    """
    tp, fp, tn, fn = confusion(pred, truth)
    n_pos, n_neg = tp + fn, tn + fp
    if n_pos == 0:
        return Estimate(float("nan"), n_pos, n_neg, _one_class_note("sensitivity", 0, n_neg))
    return Estimate(tp / n_pos, n_pos, n_neg)


def specificity(pred: ArrayLike, truth: ArrayLike) -> Estimate:
    """TN / (TN + FP): share of non-steatotic cases called negative; NaN with a note if none.

    ``pred`` and ``truth`` are boolean arrays, shape (n,); see :func:`confusion`.
    """
    tp, fp, tn, fn = confusion(pred, truth)
    n_pos, n_neg = tp + fn, tn + fp
    if n_neg == 0:
        return Estimate(float("nan"), n_pos, n_neg, _one_class_note("specificity", n_pos, 0))
    return Estimate(tn / n_neg, n_pos, n_neg)


class RocPoints(NamedTuple):
    """ROC curve points; ``thresholds`` are in score units (``-HU`` for attenuation)."""

    fpr: FloatArray
    tpr: FloatArray
    thresholds: FloatArray


def roc_points(score: ArrayLike, truth: ArrayLike) -> RocPoints:
    """Every ROC point, as ``sklearn.metrics.roc_curve(truth, score, drop_intermediate=False)``.

    Parameters
    ----------
    score : ndarray, shape (n,)
        Higher = more likely steatotic (``-hu`` for attenuation in HU).
    truth : ndarray of bool, shape (n,)

    Returns
    -------
    RocPoints
        ``fpr``, ``tpr`` (fractions) and ``thresholds`` (score units, decreasing, the first
        ``inf``): a case is called positive when ``score >= threshold``. With one class only,
        the undefined rate is NaN (as sklearn, but without its warning).
    """
    s = _score_1d(score)
    t = _truth_1d(truth, s.size)
    order = np.argsort(-s, kind="stable")
    s_desc, t_desc = s[order], t[order]
    last = np.r_[np.flatnonzero(np.diff(s_desc)), s.size - 1] if s.size else np.zeros(0, int)
    tps = np.cumsum(t_desc, dtype=np.float64)[last]
    fps = 1.0 + last - tps
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, s_desc[last]]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return RocPoints(fpr, tpr, thresholds)


# --------------------------------------------------------------------------------------------
# Vectorised bootstrap engine (weights = how often each case appears in each resample)
# --------------------------------------------------------------------------------------------


def bootstrap_indices(n: int, n_boot: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Resample indices, shape (n_boot, n): ``rng.integers(0, n, size=(n_boot, n))``.

    :func:`bootstrap_classification`, :func:`roc_band` and :func:`grade_roc_table` use exactly
    these indices with ``rng = np.random.default_rng(seed)`` (drawn in chunks of resamples,
    which gives the same numbers), one set shared by every method: the bootstrap is paired.
    """
    if n == 0:
        return np.zeros((n_boot, 0), dtype=np.int64)
    return rng.integers(0, n, size=(n_boot, n), dtype=np.int64)


def _counts(idx: NDArray[np.int64], n: int) -> IntArray:
    """(n_boot, n) multiplicities of each case in each resample."""
    b = idx.shape[0]
    flat = (idx + n * np.arange(b, dtype=np.int64)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n)


#: Elements of one (resamples x cases) count matrix (int64, ~32 MB): resamples are drawn and
#: evaluated in chunks of this size. Drawing in chunks gives the same indices as one draw.
_CHUNK_ELEMENTS = 4_000_000


def _count_chunks(
    n: int, n_boot: int, rng: np.random.Generator
) -> Iterator[tuple[slice, IntArray]]:
    """``(resample slice, counts)`` pieces of ``_counts(bootstrap_indices(n, n_boot, rng))``."""
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        yield slice(start, stop), _counts(bootstrap_indices(n, stop - start, rng), n)


class _Grouped(NamedTuple):
    pos: IntArray  # (B, g) weighted positives per tie group, groups by ascending score
    neg: IntArray  # (B, g)


def _group(score: FloatArray, truth: BoolArray, w: IntArray) -> _Grouped:
    """Weighted class counts per tie group of ``score`` (sorted ascending), per resample row."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wo = w[:, order]
    tot = np.add.reduceat(wo, starts, axis=1)
    pos = np.add.reduceat(wo * truth[order], starts, axis=1)
    return _Grouped(pos, tot - pos)


def _weighted_auc(score: FloatArray, truth: BoolArray, w: IntArray) -> FloatArray:
    """AUC of each weighted resample, shape (B,); NaN where a class is empty.

    Mann–Whitney with midranks over the resample, where case ``i`` appears ``w[b, i]`` times:
    ``U = sum_pos w_p * (negatives strictly below + 0.5 * negatives tied)``. Exact integers
    (twice ``U``) until the final division, so it equals the rank formula on the resample.
    """
    if score.size == 0:
        return np.full(w.shape[0], np.nan)
    g = _group(score, truth, w)
    below = np.cumsum(g.neg, axis=1) - g.neg
    u2 = (g.pos * (2 * below + g.neg)).sum(axis=1)
    n_pos, n_neg = g.pos.sum(axis=1), g.neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u2 / (2.0 * n_pos * n_neg), np.nan)


def _as_methods(values: ArrayLike | Mapping[str, ArrayLike]) -> tuple[list[str], FloatArray]:
    if isinstance(values, Mapping):
        names = [str(k) for k in values]
        rows = [np.asarray(v, dtype=np.float64) for v in values.values()]
        if not rows or any(r.ndim != 1 or r.size != rows[0].size for r in rows):
            raise ConfigError(
                "give at least one method, each a 1-D array with one value per case; got "
                f"shapes {[r.shape for r in rows]}"
            )
        return names, np.vstack(rows)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ConfigError(f"expected shape (n,) or (n_methods, n), got {arr.shape}")
    return [str(i) for i in range(arr.shape[0])], arr


def _check_missing(x: FloatArray, name: str) -> None:
    if np.isinf(x).any():
        raise ConfigError(f"{name} holds infinite values; only NaN is read as missing")


def _percentile_ci(
    boot: FloatArray, used: BoolArray, confidence: float
) -> tuple[FloatArray, FloatArray]:
    """Percentile interval per row over the used resamples; NaN where none is used."""
    q = [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)]
    lo = np.full(boot.shape[0], np.nan)
    hi = np.full(boot.shape[0], np.nan)
    for m in range(boot.shape[0]):
        v = boot[m, used[m]]
        v = v[~np.isnan(v)]
        if v.size:
            lo[m], hi[m] = np.percentile(v, q)
    return lo, hi


def _check_boot(n_boot: int, confidence: float) -> None:
    require(n_boot >= 1, f"n_boot must be >= 1, got {n_boot}")
    require(0.0 < confidence < 1.0, f"confidence must be in (0, 1), got {confidence}")


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


@dataclass(frozen=True)
class BootstrapResult:
    """Point estimates and paired-bootstrap percentile CIs, one entry per method.

    Per-method arrays have shape (n_methods,); ``boot_*`` arrays (n_methods, n_boot) hold each
    resample's value, NaN for a resample dropped for that method (a class absent from it).
    Fractions in [0, 1]; ``threshold_hu`` in HU.
    """

    methods: tuple[str, ...]
    n: IntArray
    n_pos: IntArray
    n_neg: IntArray
    auc: FloatArray
    auc_lo: FloatArray
    auc_hi: FloatArray
    sensitivity: FloatArray
    sensitivity_lo: FloatArray
    sensitivity_hi: FloatArray
    specificity: FloatArray
    specificity_lo: FloatArray
    specificity_hi: FloatArray
    tp: IntArray
    fp: IntArray
    tn: IntArray
    fn: IntArray
    n_boot: int
    n_boot_used: IntArray
    threshold_hu: float
    confidence: float
    boot_auc: FloatArray
    boot_sensitivity: FloatArray
    boot_specificity: FloatArray
    notes: tuple[str, ...]


def bootstrap_classification(
    hu: ArrayLike | Mapping[str, ArrayLike],
    truth: ArrayLike,
    *,
    threshold_hu: float = 40.0,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """AUC, sensitivity and specificity of each method with paired bootstrap percentile CIs.

    Parameters
    ----------
    hu : ndarray, shape (n_methods, n) or (n,), or dict method -> ndarray (n,)
        Liver attenuation (HU) per method and case; the score is ``-hu`` (lower HU = more fat)
        and a case is called positive when ``hu <= threshold_hu``. NaN = missing: that case is
        left out of that method (point estimate and every resample it appears in), so the
        methods stay paired on the cases they share.
    truth : ndarray of bool, shape (n,)
        True = steatosis; no missing values.
    threshold_hu : float
        Positive when attenuation <= this (HU).
    n_boot : int
        Resamples (the paper: 1,000).
    seed : int or numpy.random.Generator
        The indices are ``bootstrap_indices(n, n_boot, np.random.default_rng(seed))``, drawn
        once and shared by every method.
    confidence : float
        Coverage of the percentile interval.

    Returns
    -------
    BootstrapResult
        A resample with one class only (for that method) is dropped for all three metrics and
        not counted in ``n_boot_used``. Undefined estimates are NaN, explained in ``notes``.

    Notes
    -----
    Vectorised: the case multiplicities of the resamples form an (n_boot, n) count matrix
    (built in chunks of about 4 M entries to bound memory) shared by the methods. AUCs come
    from weighted midrank Mann–Whitney sums over the tie groups of the *original* sample (one
    sort per method instead of one per resample), confusion counts from matrix products with
    the indicator vectors. Equal to evaluating each resample separately.
    """
    _check_boot(n_boot, confidence)
    names, h = _as_methods(hu)
    _check_missing(h, "hu")
    t = _truth_1d(truth, h.shape[1])
    m = len(names)
    valid = ~np.isnan(h)
    pred = h <= threshold_hu  # NaN: False, and left out below

    out: dict[str, Any] = {k: np.zeros(m, np.int64) for k in ("n", "n_pos", "n_neg")}
    out |= {k: np.zeros(m, np.int64) for k in ("tp", "fp", "tn", "fn", "n_boot_used")}
    out |= {k: np.full(m, np.nan) for k in ("auc", "sensitivity", "specificity")}
    point_notes: list[list[str]] = []
    for j in range(m):
        hj, tj, pj = h[j, valid[j]], t[valid[j]], pred[j, valid[j]]
        a, se, sp = auc(-hj, tj), sensitivity(pj, tj), specificity(pj, tj)
        out["tp"][j], out["fp"][j], out["tn"][j], out["fn"][j] = confusion(pj, tj)
        out["n"][j], out["n_pos"][j], out["n_neg"][j] = hj.size, a.n_pos, a.n_neg
        out["auc"][j], out["sensitivity"][j], out["specificity"][j] = a.value, se.value, sp.value
        point_notes.append([x for x in dict.fromkeys((a.note, se.note, sp.note)) if x])

    boots = {k: np.full((m, n_boot), np.nan) for k in ("auc", "sensitivity", "specificity")}
    used = np.zeros((m, n_boot), dtype=np.bool_)
    for part, w in _count_chunks(h.shape[1], n_boot, _rng(seed)):
        for j in range(m):
            wj, tj, pj = w[:, valid[j]], t[valid[j]], pred[j, valid[j]]
            b_pos = wj @ tj.astype(np.int64)
            b_neg = wj.sum(axis=1) - b_pos
            ok = used[j, part] = (b_pos > 0) & (b_neg > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                boots["auc"][j, part] = np.where(ok, _weighted_auc(-h[j, valid[j]], tj, wj), np.nan)
                tp_b, tn_b = wj @ (pj & tj).astype(np.int64), wj @ (~pj & ~tj).astype(np.int64)
                boots["sensitivity"][j, part] = np.where(ok, tp_b / b_pos, np.nan)
                boots["specificity"][j, part] = np.where(ok, tn_b / b_neg, np.nan)
    out["n_boot_used"] = used.sum(axis=1)

    notes = []
    for j, note in enumerate(point_notes):
        if (n_out := int((~valid[j]).sum())) > 0:
            note.append(f"{n_out} cases without a value left out")
        if (dropped := n_boot - int(out["n_boot_used"][j])) > 0:
            note.append(f"{dropped} of {n_boot} resamples had one class and were dropped")
        notes.append("; ".join(note))

    cis: dict[str, Any] = {}
    for k in ("auc", "sensitivity", "specificity"):
        cis[f"{k}_lo"], cis[f"{k}_hi"] = _percentile_ci(boots[k], used, confidence)
    return BootstrapResult(
        methods=tuple(names),
        **out,
        **cis,
        n_boot=n_boot,
        threshold_hu=float(threshold_hu),
        confidence=float(confidence),
        boot_auc=boots["auc"],
        boot_sensitivity=boots["sensitivity"],
        boot_specificity=boots["specificity"],
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------
# ROC band
# --------------------------------------------------------------------------------------------


def _tpr_at_fpr(score: FloatArray, truth: BoolArray, w: IntArray, grid: FloatArray) -> FloatArray:
    """TPR of each weighted resample at the FPRs of ``grid``, shape (B, G); NaN rows if one class.

    The ROC curve is linear between its points (a tie group is one straight segment); at an FPR
    where the curve rises vertically (equal within 1e-9 negatives) the upper TPR is taken.
    """
    b = w.shape[0]
    out = np.full((b, grid.size), np.nan)
    if score.size == 0:
        return out
    g = _group(-score, truth, w)  # groups by descending score: thresholds from high to low
    tp = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(g.pos, axis=1)], axis=1)
    fp = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(g.neg, axis=1)], axis=1)
    ok = (tp[:, -1] > 0) & (fp[:, -1] > 0)
    if not ok.any():
        return out
    tp, fp = tp[ok], fp[ok]
    tpr, fpr = tp / tp[:, -1:], fp / fp[:, -1:]
    rows, npts = fp.shape
    # Last point with FP <= f * negatives (exact integers; 1e-9 absorbs f * n rounding), found
    # by one searchsorted over all rows: offsetting row r by r * stride keeps rows apart.
    stride = int(fp[:, -1].max()) + 2
    offset = stride * np.arange(rows, dtype=np.int64)[:, None]
    allowed = np.floor(grid[None, :] * fp[:, -1:] + 1e-9).astype(np.int64)
    j = np.searchsorted((fp + offset).ravel(), (allowed + offset).ravel(), side="right") - 1
    row_end = np.repeat(np.arange(rows) * npts + npts - 1, grid.size)
    k = np.minimum(j + 1, row_end)
    fx, fy = fpr.ravel(), tpr.ravel()
    gq = np.tile(grid, rows)
    dx = fx[k] - fx[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(dx > 0, np.clip((gq - fx[j]) / dx, 0.0, 1.0), 0.0)
    out[ok] = (fy[j] + frac * (fy[k] - fy[j])).reshape(rows, grid.size)
    return out


@dataclass(frozen=True)
class RocBand:
    """Pointwise bootstrap percentile band of TPR at fixed FPRs, for plotting.

    ``fpr`` shape (G,); ``tpr`` (the full sample), ``tpr_lo``, ``tpr_hi`` shape (n_methods, G);
    all fractions.
    """

    methods: tuple[str, ...]
    fpr: FloatArray
    tpr: FloatArray
    tpr_lo: FloatArray
    tpr_hi: FloatArray
    n_boot: int
    n_boot_used: IntArray
    confidence: float
    notes: tuple[str, ...]


def roc_band(
    hu: ArrayLike | Mapping[str, ArrayLike],
    truth: ArrayLike,
    *,
    fpr_grid: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
    confidence: float = 0.95,
) -> RocBand:
    """Pointwise percentile band of the ROC curve (TPR at fixed FPR, vertical averaging).

    Parameters
    ----------
    hu, truth, n_boot, seed, confidence
        As :func:`bootstrap_classification` (score ``-hu``, HU; NaN = missing; paired indices).
    fpr_grid : ndarray, shape (G,), optional
        FPRs in [0, 1]; default ``np.linspace(0, 1, 101)``.

    Returns
    -------
    RocBand
        TPR is read off each resample's ROC curve, linear between points and the upper value
        where the curve is vertical; resamples with one class are dropped (``n_boot_used``).
    """
    _check_boot(n_boot, confidence)
    grid = np.linspace(0.0, 1.0, 101) if fpr_grid is None else np.asarray(fpr_grid, np.float64)
    require(
        grid.ndim == 1 and bool(np.all((grid >= 0) & (grid <= 1))),
        f"fpr_grid must be 1-D with values in [0, 1], got shape {grid.shape}",
    )
    names, h = _as_methods(hu)
    _check_missing(h, "hu")
    t = _truth_1d(truth, h.shape[1])
    m = len(names)
    valid = ~np.isnan(h)
    boot = np.full((m, n_boot, grid.size), np.nan)
    for part, w in _count_chunks(h.shape[1], n_boot, _rng(seed)):
        for j in range(m):
            boot[j, part] = _tpr_at_fpr(-h[j, valid[j]], t[valid[j]], w[:, valid[j]], grid)
    tpr, lo, hi = (np.full((m, grid.size), np.nan) for _ in range(3))
    used_n = np.zeros(m, np.int64)
    notes = []
    q = [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)]
    for j in range(m):
        hj, tj = h[j, valid[j]], t[valid[j]]
        tpr[j] = _tpr_at_fpr(-hj, tj, np.ones((1, hj.size), np.int64), grid)[0]
        ok = ~np.isnan(boot[j, :, 0])
        used_n[j] = int(ok.sum())
        if used_n[j]:
            lo[j], hi[j] = np.percentile(boot[j, ok], q, axis=0)
        n_pos = int(tj.sum())
        note = _one_class_note("ROC", n_pos, tj.size - n_pos) if np.isnan(tpr[j, 0]) else ""
        notes.append(note)
    return RocBand(tuple(names), grid, tpr, lo, hi, n_boot, used_n, float(confidence), tuple(notes))


# --------------------------------------------------------------------------------------------
# Grades and reference standards
# --------------------------------------------------------------------------------------------


def _to_pylist(values: Any) -> list[Any]:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return list(values.to_pylist())
    return list(np.asarray(values, dtype=object).ravel())


def _grade_codes(values: Any, what: str) -> NDArray[np.int8]:
    """0 none / 1 mild / 2 moderate / 3 severe (also 0-3, "S0"-"S3"); -1 where missing."""
    out = np.full(len(vals := _to_pylist(values)), -1, dtype=np.int8)
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
        arr = pa.array(np.asarray(_to_pylist(column), dtype=np.float64), from_pandas=True)
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
    _check_boot(n_boot, confidence)
    require(kind in ("hu", "pdff"), f"kind must be 'hu' or 'pdff', got {kind!r}")
    names, h = _as_methods(hu_or_pdff)
    _check_missing(h, "hu_or_pdff")
    codes = _grade_codes(grades, "grades")
    require(codes.size == h.shape[1], f"{codes.size} grades for {h.shape[1]} cases")
    has_grade = codes >= 0
    h, codes = h[:, has_grade], codes[has_grade]
    sign = -1.0 if kind == "hu" else 1.0
    valid = ~np.isnan(h)
    boots = np.full((len(names), len(GRADE_PROBLEMS), n_boot), np.nan)
    for part, w in _count_chunks(codes.size, n_boot, _rng(seed)):
        for j, p in np.ndindex(boots.shape[:2]):
            truth = codes[valid[j]] >= list(GRADE_PROBLEMS.values())[p]
            boots[j, p, part] = _weighted_auc(sign * h[j, valid[j]], truth, w[:, valid[j]])
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


# --------------------------------------------------------------------------------------------
# Table wrapper
# --------------------------------------------------------------------------------------------


def _truth_with_mask(values: Any) -> tuple[BoolArray, BoolArray]:
    """(truth, has_truth) from booleans (or 0/1) with nulls / None / NaN for missing."""
    arr = values
    if not isinstance(arr, pa.ChunkedArray | pa.Array):
        arr = pa.array(_to_pylist(values), from_pandas=True)
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
    threshold_hu: float = 40.0,
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
