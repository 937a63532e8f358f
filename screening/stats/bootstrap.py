"""Vectorised paired bootstrap of AUC, sensitivity and specificity.

One set of resample indices is drawn and shared by every method (a *paired* bootstrap, so
methods can be compared resample by resample), and every resample is evaluated at once from the
per-resample case counts (weights = how often each case appears in each resample). The
conventions of :mod:`screening.stats.classification` hold (score ``-HU``, positive when
``hu <= threshold_hu``, NaN = missing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from screening.config import require
from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.errors import ConfigError
from screening.stats.estimates import (
    BoolArray,
    FloatArray,
    IntArray,
    auc,
    confusion,
    sensitivity,
    specificity,
    truth_1d,
)

__all__ = ["BootstrapResult", "bootstrap_classification", "bootstrap_indices"]


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


def count_chunks(n: int, n_boot: int, rng: np.random.Generator) -> Iterator[tuple[slice, IntArray]]:
    """``(resample slice, counts)`` pieces of ``_counts(bootstrap_indices(n, n_boot, rng))``."""
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        yield slice(start, stop), _counts(bootstrap_indices(n, stop - start, rng), n)


class _Grouped(NamedTuple):
    pos: IntArray  # (B, g) weighted positives per tie group, groups by ascending score
    neg: IntArray  # (B, g)


def tie_groups(score: FloatArray, truth: BoolArray, w: IntArray) -> _Grouped:
    """Weighted class counts per tie group of ``score`` (sorted ascending), per resample row."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    wo = w[:, order]
    tot = np.add.reduceat(wo, starts, axis=1)
    pos = np.add.reduceat(wo * truth[order], starts, axis=1)
    return _Grouped(pos, tot - pos)


def weighted_auc(score: FloatArray, truth: BoolArray, w: IntArray) -> FloatArray:
    """AUC of each weighted resample, shape (B,); NaN where a class is empty.

    Mann–Whitney with midranks over the resample, where case ``i`` appears ``w[b, i]`` times:
    ``U = sum_pos w_p * (negatives strictly below + 0.5 * negatives tied)``. Exact integers
    (twice ``U``) until the final division, so it equals the rank formula on the resample.
    """
    if score.size == 0:
        return np.full(w.shape[0], np.nan)
    g = tie_groups(score, truth, w)
    below = np.cumsum(g.neg, axis=1) - g.neg
    u2 = (g.pos * (2 * below + g.neg)).sum(axis=1)
    n_pos, n_neg = g.pos.sum(axis=1), g.neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u2 / (2.0 * n_pos * n_neg), np.nan)


def as_methods(values: ArrayLike | Mapping[str, ArrayLike]) -> tuple[list[str], FloatArray]:
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


def check_missing(x: FloatArray, name: str) -> None:
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


def check_boot(n_boot: int, confidence: float) -> None:
    require(n_boot >= 1, f"n_boot must be >= 1, got {n_boot}")
    require(0.0 < confidence < 1.0, f"confidence must be in (0, 1), got {confidence}")


def as_rng(seed: int | np.random.Generator) -> np.random.Generator:
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
    threshold_hu: float = STEATOSIS_THRESHOLD_HU,
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
    check_boot(n_boot, confidence)
    names, h = as_methods(hu)
    check_missing(h, "hu")
    t = truth_1d(truth, h.shape[1])
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
    for part, w in count_chunks(h.shape[1], n_boot, as_rng(seed)):
        for j in range(m):
            wj, tj, pj = w[:, valid[j]], t[valid[j]], pred[j, valid[j]]
            b_pos = wj @ tj.astype(np.int64)
            b_neg = wj.sum(axis=1) - b_pos
            ok = used[j, part] = (b_pos > 0) & (b_neg > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                boots["auc"][j, part] = np.where(ok, weighted_auc(-h[j, valid[j]], tj, wj), np.nan)
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
