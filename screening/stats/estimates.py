"""Point estimates of a binary test: AUC, confusion counts, sensitivity and specificity.

The conventions of :mod:`screening.stats.classification` hold: a ``score`` is higher for more
likely steatotic (``-HU`` for liver attenuation), ``truth`` is boolean (True = steatosis), and
an undefined quantity is NaN with a ``note`` that says why, never an exception or a sklearn
warning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from screening.errors import ConfigError

__all__ = ["Estimate", "auc", "confusion", "sensitivity", "specificity"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


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


def truth_1d(truth: ArrayLike, n: int | None = None) -> BoolArray:
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


def score_1d(score: ArrayLike, name: str = "score") -> FloatArray:
    s = np.asarray(score, dtype=np.float64)
    if s.ndim != 1:
        raise ConfigError(f"{name} must be 1-D (one value per case), got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ConfigError(
            f"{name} holds {int((~np.isfinite(s)).sum())} non-finite values; drop missing "
            "cases first (bootstrap_classification and classification_table drop NaN per method)"
        )
    return s


def one_class_note(metric: str, n_pos: int, n_neg: int) -> str:
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

    s = score_1d(score)
    t = truth_1d(truth, s.size)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return Estimate(float("nan"), n_pos, n_neg, one_class_note("AUC", n_pos, n_neg))
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
    p = truth_1d(pred)
    t = truth_1d(truth, p.size)
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
        return Estimate(float("nan"), n_pos, n_neg, one_class_note("sensitivity", 0, n_neg))
    return Estimate(tp / n_pos, n_pos, n_neg)


def specificity(pred: ArrayLike, truth: ArrayLike) -> Estimate:
    """TN / (TN + FP): share of non-steatotic cases called negative; NaN with a note if none.

    ``pred`` and ``truth`` are boolean arrays, shape (n,); see :func:`confusion`.
    """
    tp, fp, tn, fn = confusion(pred, truth)
    n_pos, n_neg = tp + fn, tn + fp
    if n_neg == 0:
        return Estimate(float("nan"), n_pos, n_neg, one_class_note("specificity", n_pos, 0))
    return Estimate(tn / n_neg, n_pos, n_neg)
