"""ROC curves: every point of the empirical curve, and a pointwise paired-bootstrap band.

The conventions of :mod:`screening.stats.classification` hold: scores are ``-HU`` (higher =
more likely steatotic), ``truth`` is boolean, NaN attenuation = missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from screening.config import require
from screening.stats.bootstrap import (
    as_methods,
    as_rng,
    check_boot,
    check_missing,
    count_chunks,
    tie_groups,
)
from screening.stats.estimates import (
    BoolArray,
    FloatArray,
    IntArray,
    one_class_note,
    score_1d,
    truth_1d,
)

__all__ = ["RocBand", "RocPoints", "roc_band", "roc_points"]


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
    s = score_1d(score)
    t = truth_1d(truth, s.size)
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
    g = tie_groups(-score, truth, w)  # groups by descending score: thresholds from high to low
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
    check_boot(n_boot, confidence)
    grid = np.linspace(0.0, 1.0, 101) if fpr_grid is None else np.asarray(fpr_grid, np.float64)
    require(
        grid.ndim == 1 and bool(np.all((grid >= 0) & (grid <= 1))),
        f"fpr_grid must be 1-D with values in [0, 1], got shape {grid.shape}",
    )
    names, h = as_methods(hu)
    check_missing(h, "hu")
    t = truth_1d(truth, h.shape[1])
    m = len(names)
    valid = ~np.isnan(h)
    boot = np.full((m, n_boot, grid.size), np.nan)
    for part, w in count_chunks(h.shape[1], n_boot, as_rng(seed)):
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
        note = one_class_note("ROC", n_pos, tj.size - n_pos) if np.isnan(tpr[j, 0]) else ""
        notes.append(note)
    return RocBand(tuple(names), grid, tpr, lo, hi, n_boot, used_n, float(confidence), tuple(notes))
