"""Segmentation agreement: Dice, Jaccard, Hausdorff distance, HD95 and ASSD against a reference.

The paper reports these with ``medpy.metric.binary`` 0.4.0; the functions here reproduce its
definitions exactly (tests compare them with a literal copy of medpy's algorithm):

- surface of a mask: ``mask ^ binary_erosion(mask, generate_binary_structure(ndim, 1))``
  with scipy's default ``border_value=0``, so a voxel on the array's edge is surface;
- ``d(a -> b)``: for each surface voxel of ``a``, the Euclidean distance in mm (anisotropic
  ``spacing_mm``) to the nearest surface voxel of ``b`` (medpy reads it off
  ``distance_transform_edt(~surface_b, sampling=spacing_mm)``);
- ``hd = max(max d(pred -> ref), max d(ref -> pred))``;
- ``hd95 = np.percentile(np.hstack((d(pred -> ref), d(ref -> pred))), 95)`` (pooled, linear);
- ``assd = mean(mean d(pred -> ref), mean d(ref -> pred))`` (mean of the two directed means).

Where medpy raises (an empty mask) these return NaN with a ``reason`` instead; see
:func:`segmentation_metrics`. Pure array functions first, then the scan-store wrapper
(:func:`segmentation_row`), the cohort table (:func:`segmentation_table`) and the summary
(:func:`summarise_segmentation`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from screening.config import require
from screening.constants import ORGAN_LABELS
from screening.errors import ConfigError
from screening.location import Location, Where
from screening.masks import bounding_box
from screening.store.scan import is_complete, open_scan_store

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "DEFAULT_LABELS",
    "METRIC_COLUMNS",
    "SEGMENTATION_SCHEMA",
    "SegmentationMetrics",
    "SegmentationReason",
    "dice",
    "jaccard",
    "segmentation_metrics",
    "segmentation_row",
    "segmentation_table",
    "summarise_segmentation",
    "surface_distances",
]

#: Organ name -> label value in ``seg`` / ``seg_reference`` (schemas/scan_store.yaml).
DEFAULT_LABELS: Mapping[str, int] = ORGAN_LABELS

#: The agreement metrics :func:`summarise_segmentation` summarises by default.
METRIC_COLUMNS: tuple[str, ...] = ("dice", "jaccard", "hd_mm", "hd95_mm", "assd_mm")

#: Columns of :func:`segmentation_table`; undefined values are null.
SEGMENTATION_SCHEMA = pa.schema(
    [
        ("scan_id", pa.string()),
        ("cohort", pa.string()),
        ("organ", pa.string()),
        ("dice", pa.float64()),
        ("jaccard", pa.float64()),
        ("hd_mm", pa.float64()),
        ("hd95_mm", pa.float64()),
        ("assd_mm", pa.float64()),
        ("pred_volume_ml", pa.float64()),
        ("ref_volume_ml", pa.float64()),
        ("reason", pa.string()),
    ]
)

# Surface search: a KD-tree over the surface voxels is exact and, for an organ (surface ~3 %
# of its bounding box), ~4x faster than the distance transform of the box (full-size liver,
# one core: 0.42 s vs 1.7 s per pair); the transform wins once the two surfaces exceed ~15-20 %
# of the box (ragged, noisy masks: 2.4 s vs 3.0 s at 26 %).
_KDTREE_MAX_SURFACE_FRACTION = 0.15


class SegmentationReason(StrEnum):
    """Why some metrics of a row are undefined (null / NaN)."""

    EMPTY_PREDICTION = "empty prediction"  # distances undefined; Dice and Jaccard are 0
    EMPTY_REFERENCE = "empty reference"  # distances undefined; Dice and Jaccard are 0
    EMPTY_BOTH = "empty prediction and reference"  # every metric undefined
    NO_SEG = "no seg"  # the store has no prediction array
    NO_SEG_REFERENCE = "no seg_reference"  # the store has no reference array
    GRID_MISMATCH = "grid mismatch"  # prediction and reference arrays differ in shape


@dataclass(frozen=True, kw_only=True)
class SegmentationMetrics:
    """Agreement of one predicted mask with its reference (medpy 0.4.0 definitions).

    Attributes
    ----------
    dice, jaccard : float
        Overlap in [0, 1]; NaN when both masks are empty.
    hd_mm, hd95_mm, assd_mm : float
        Hausdorff distance, its pooled 95th percentile and the average symmetric surface
        distance, in mm; NaN when either mask is empty.
    pred_voxels, ref_voxels : int
        Voxels in each mask.
    reason : str or None
        A :class:`SegmentationReason` value when some metric is undefined, else None.
    """

    dice: float
    jaccard: float
    hd_mm: float
    hd95_mm: float
    assd_mm: float
    pred_voxels: int
    ref_voxels: int
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_mask(a: ArrayLike) -> NDArray[np.bool_]:
    return np.asarray(a).astype(bool, copy=False)


def _check_pair(
    pred: NDArray[np.bool_], ref: NDArray[np.bool_], spacing_mm: Sequence[float] | None = None
) -> None:
    require(
        pred.shape == ref.shape,
        f"pred and ref must have the same shape, got {pred.shape} and {ref.shape}; resample "
        "the prediction onto the reference grid first",
    )
    if spacing_mm is not None:
        require(
            len(spacing_mm) == pred.ndim and all(float(s) > 0 for s in spacing_mm),
            f"spacing_mm must be {pred.ndim} positive values (one per axis, mm), "
            f"got {tuple(spacing_mm)}",
        )


def _overlap(pred: NDArray[np.bool_], ref: NDArray[np.bool_]) -> tuple[int, int, int]:
    """(|pred ∩ ref|, |pred|, |ref|)."""
    return (
        int(np.count_nonzero(pred & ref)),
        int(np.count_nonzero(pred)),
        int(np.count_nonzero(ref)),
    )


def dice(pred: ArrayLike, ref: ArrayLike) -> float:
    """Dice coefficient ``2 |P ∩ R| / (|P| + |R|)`` of two boolean masks.

    Parameters
    ----------
    pred, ref : (z, y, x) bool
        Masks on the same grid (any shape; nonzero counts as True).

    Returns
    -------
    float
        In [0, 1]; 0 when exactly one mask is empty, NaN when both are (medpy 0.4.0 returns
        0.0 there; "no organ in either" is not agreement to average over).

    >>> a = np.zeros((1, 1, 4), bool); a[..., :2] = True
    >>> b = np.zeros((1, 1, 4), bool); b[..., 1:] = True
    >>> round(dice(a, b), 4)
    0.4
    """
    p, r = _as_mask(pred), _as_mask(ref)
    _check_pair(p, r)
    inter, n_p, n_r = _overlap(p, r)
    return 2.0 * inter / (n_p + n_r) if n_p + n_r else math.nan


def jaccard(pred: ArrayLike, ref: ArrayLike) -> float:
    """Jaccard coefficient ``|P ∩ R| / |P ∪ R|`` of two boolean masks.

    Parameters
    ----------
    pred, ref : (z, y, x) bool
        Masks on the same grid.

    Returns
    -------
    float
        In [0, 1]; 0 when exactly one mask is empty, NaN when both are (medpy 0.4.0 raises
        ZeroDivisionError there).

    >>> a = np.zeros((1, 1, 4), bool); a[..., :2] = True
    >>> b = np.zeros((1, 1, 4), bool); b[..., 1:] = True
    >>> jaccard(a, b)
    0.25
    """
    p, r = _as_mask(pred), _as_mask(ref)
    _check_pair(p, r)
    inter, n_p, n_r = _overlap(p, r)
    union = n_p + n_r - inter
    return inter / union if union else math.nan


def _union_box(
    pred_box: tuple[slice, ...], ref_box: tuple[slice, ...], shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """Bounding box of ``pred | ref`` grown by one voxel and clamped to the array.

    Clamping, not zero padding: at the array's own faces scipy's erosion (``border_value=0``)
    already treats the outside as background, exactly as medpy does on the uncropped array
    (zero padding would be equivalent; only ``border_value=1`` would differ). Inside the
    array, every voxel outside the box is background in both masks, so erosion and surface
    distances in the box equal those of the whole array.
    """
    return tuple(
        slice(max(0, min(a.start, b.start) - 1), min(n, max(a.stop, b.stop) + 1))
        for a, b, n in zip(pred_box, ref_box, shape, strict=True)
    )


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """medpy's 1-voxel border: ``mask ^ binary_erosion(mask, face connectivity, border 0)``."""
    footprint = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=footprint, iterations=1)
    out: NDArray[np.bool_] = mask ^ eroded
    return out


def _distances(offsets: NDArray[np.intp], spacing: NDArray[np.float64]) -> NDArray[np.float64]:
    """Euclidean length in mm of integer voxel offsets (ndim, n), summed in scipy's order."""
    total = np.zeros(offsets.shape[1], dtype=np.float64)
    for ax in range(offsets.shape[0]):
        d = offsets[ax].astype(np.float64) * spacing[ax]
        total += d * d
    out: NDArray[np.float64] = np.sqrt(total)
    return out


def _directed_edt(
    from_idx: NDArray[np.intp], to_surface: NDArray[np.bool_], spacing: NDArray[np.float64]
) -> NDArray[np.float64]:
    # The feature transform (nearest surface voxel of every voxel) is what
    # distance_transform_edt(~to_surface, sampling=...) computes its distances from; taking
    # the offsets at the query voxels only skips three full-box float64 arrays.
    ft = ndimage.distance_transform_edt(
        ~to_surface, sampling=spacing, return_distances=False, return_indices=True
    )
    nearest = ft[(slice(None), *from_idx)]
    return _distances(nearest - from_idx, spacing)


def _directed_kdtree(
    from_idx: NDArray[np.intp], to_idx: NDArray[np.intp], spacing: NDArray[np.float64]
) -> NDArray[np.float64]:
    from scipy.spatial import cKDTree

    tree = cKDTree((to_idx.T * spacing), leafsize=32)
    _, nearest = tree.query(from_idx.T * spacing, k=1)
    # Recompute from the integer offsets so the values are bit-identical to the EDT path.
    return _distances(to_idx[:, nearest] - from_idx, spacing)


def surface_distances(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing_mm: Sequence[float],
    *,
    method: Literal["auto", "kdtree", "edt"] = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Directed surface distances between two non-empty masks, medpy 0.4.0 semantics.

    Parameters
    ----------
    pred, ref : (z, y, x) bool
        Masks on the same grid; both must hold at least one voxel.
    spacing_mm : (z, y, x) float
        Voxel spacing in mm (anisotropic allowed).
    method : {"auto", "kdtree", "edt"}
        How the nearest surface voxel is found: a KD-tree over the surface voxels, or scipy's
        Euclidean feature transform as medpy uses. Both are exact and give identical values;
        "auto" picks the faster one for the masks' shape.

    Returns
    -------
    d_pred_ref : (n_pred_surface,) float64
        For each surface voxel of ``pred`` (C order), distance in mm to the nearest surface
        voxel of ``ref``.
    d_ref_pred : (n_ref_surface,) float64
        The same from ``ref`` to ``pred``.

    Raises
    ------
    ConfigError
        When a mask is empty (medpy raises RuntimeError), shapes differ, or spacing is invalid.

    Notes
    -----
    Both masks are cropped to the bounding box of their union plus one voxel (clamped to the
    array) first; this changes no value (see ``_union_box``).
    """
    p, r = _as_mask(pred), _as_mask(ref)
    _check_pair(p, r, spacing_mm)
    require(method in ("auto", "kdtree", "edt"), f"method must be auto/kdtree/edt, got {method!r}")
    pred_box, ref_box = bounding_box(p), bounding_box(r)
    if pred_box is None or ref_box is None:
        raise ConfigError(
            f"surface distances need two non-empty masks, got {np.count_nonzero(p)} prediction "
            f"and {np.count_nonzero(r)} reference voxels; segmentation_metrics reports NaN with "
            "a reason instead"
        )
    box = _union_box(pred_box, ref_box, p.shape)
    return _cropped_distances(p[box], r[box], spacing_mm, method)


def _cropped_distances(
    p: NDArray[np.bool_], r: NDArray[np.bool_], spacing_mm: Sequence[float], method: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    sp, sr = _surface(p), _surface(r)
    ip = np.asarray(np.nonzero(sp), dtype=np.intp)
    ir = np.asarray(np.nonzero(sr), dtype=np.intp)
    if method == "auto":
        dense = ip.shape[1] + ir.shape[1] > _KDTREE_MAX_SURFACE_FRACTION * sp.size
        method = "edt" if dense else "kdtree"
    if method == "edt":
        return _directed_edt(ip, sr, spacing), _directed_edt(ir, sp, spacing)
    return _directed_kdtree(ip, ir, spacing), _directed_kdtree(ir, ip, spacing)


def segmentation_metrics(
    pred: ArrayLike,
    ref: ArrayLike,
    spacing_mm: Sequence[float],
    *,
    method: Literal["auto", "kdtree", "edt"] = "auto",
) -> SegmentationMetrics:
    """Dice, Jaccard, HD, HD95 and ASSD of ``pred`` against ``ref`` (medpy 0.4.0 definitions).

    Parameters
    ----------
    pred, ref : (z, y, x) bool
        Predicted and reference masks on the same grid.
    spacing_mm : (z, y, x) float
        Voxel spacing in mm.
    method : {"auto", "kdtree", "edt"}
        Passed to :func:`surface_distances`.

    Returns
    -------
    SegmentationMetrics
        Distances in mm. An empty prediction or reference gives NaN distances, Dice and Jaccard
        0 and ``reason`` "empty prediction" / "empty reference"; both empty gives every metric
        NaN and "empty prediction and reference". (medpy raises RuntimeError for the distances.)

    Examples
    --------
    Two 4-voxel cubes, one slice apart along z at 2.5 mm slices:

    >>> a = np.zeros((8, 6, 6), bool); a[1:5, 1:5, 1:5] = True
    >>> m = segmentation_metrics(a, np.roll(a, 1, axis=0), (2.5, 0.7, 0.7))
    >>> m.dice, m.hd_mm
    (0.75, 2.5)
    """
    p, r = _as_mask(pred), _as_mask(ref)
    _check_pair(p, r, spacing_mm)
    require(method in ("auto", "kdtree", "edt"), f"method must be auto/kdtree/edt, got {method!r}")
    pred_box, ref_box = bounding_box(p), bounding_box(r)
    if pred_box is not None and ref_box is not None:  # the usual case: work in the union box
        box = _union_box(pred_box, ref_box, p.shape)
        p, r = p[box], r[box]
    inter, n_p, n_r = _overlap(p, r)
    nan = math.nan
    if n_p == 0 or n_r == 0:
        if n_p == n_r:
            reason, overlap = SegmentationReason.EMPTY_BOTH, nan
        else:
            reason = (
                SegmentationReason.EMPTY_PREDICTION
                if n_p == 0
                else SegmentationReason.EMPTY_REFERENCE
            )
            overlap = 0.0
        return SegmentationMetrics(
            dice=overlap,
            jaccard=overlap,
            hd_mm=nan,
            hd95_mm=nan,
            assd_mm=nan,
            pred_voxels=n_p,
            ref_voxels=n_r,
            reason=str(reason),
        )
    d_pr, d_rp = _cropped_distances(p, r, spacing_mm, method)
    return SegmentationMetrics(
        dice=2.0 * inter / (n_p + n_r),
        jaccard=inter / (n_p + n_r - inter),
        hd_mm=float(max(d_pr.max(), d_rp.max())),
        hd95_mm=float(np.percentile(np.hstack((d_pr, d_rp)), 95)),
        assd_mm=float(np.mean((d_pr.mean(), d_rp.mean()))),
        pred_voxels=n_p,
        ref_voxels=n_r,
    )


def _row(
    scan_id: str,
    cohort: str | None,
    organ: str,
    m: SegmentationMetrics | None,
    voxel_ml: float,
    reason: str | None,
) -> dict[str, Any]:
    def value(x: float | None) -> float | None:
        return None if x is None or math.isnan(x) else float(x)

    return {
        "scan_id": scan_id,
        "cohort": cohort,
        "organ": organ,
        "dice": value(m.dice) if m else None,
        "jaccard": value(m.jaccard) if m else None,
        "hd_mm": value(m.hd_mm) if m else None,
        "hd95_mm": value(m.hd95_mm) if m else None,
        "assd_mm": value(m.assd_mm) if m else None,
        "pred_volume_ml": m.pred_voxels * voxel_ml if m else None,
        "ref_volume_ml": m.ref_voxels * voxel_ml if m else None,
        "reason": m.reason if m else reason,
    }


def segmentation_row(
    store_path: str | os.PathLike[str],
    *,
    pred_array: str = "seg",
    ref_array: str = "seg_reference",
    labels: Mapping[str, int] = DEFAULT_LABELS,
) -> list[dict[str, Any]]:
    """Agreement of one scan store's ``pred_array`` with its ``ref_array``, one row per organ.

    Parameters
    ----------
    store_path : path
        A complete scan store (``STORE/scans/<scan_id>.zarr``).
    pred_array, ref_array : str
        The label arrays compared (uint8, labels as in ``schemas/scan_store.yaml``).
    labels : mapping of organ name to label value

    Returns
    -------
    list of dict
        Keys as :data:`SEGMENTATION_SCHEMA`; volumes in ml; undefined values None. A store
        without either array, or with arrays of different shapes, gives rows whose metrics are
        all None and whose ``reason`` says why ("no seg", "no seg_reference", "grid mismatch").
    """
    store = open_scan_store(store_path)
    scan = store.attrs.get("scan", {})
    scan_id, cohort = str(scan["scan_id"]), scan.get("cohort")
    voxel_ml = float(np.prod(store.spacing_mm)) / 1000.0

    missing = [a for a in (pred_array, ref_array) if not store.has(a)]
    if missing:  # "no seg" / "no seg_reference" with the default array names
        reason = f"no {missing[0]}"
        return [_row(scan_id, cohort, organ, None, voxel_ml, reason) for organ in labels]
    pred, ref = store.read(pred_array), store.read(ref_array)
    if pred.shape != ref.shape:
        reason = str(SegmentationReason.GRID_MISMATCH)
        return [_row(scan_id, cohort, organ, None, voxel_ml, reason) for organ in labels]
    return [
        _row(
            scan_id,
            cohort,
            organ,
            segmentation_metrics(pred == label, ref == label, store.spacing_mm),
            voxel_ml,
            None,
        )
        for organ, label in labels.items()
    ]


def segmentation_table(
    store_root: Where,
    *,
    client: Client | None = None,
    pred_array: str = "seg",
    ref_array: str = "seg_reference",
    labels: Mapping[str, int] = DEFAULT_LABELS,
) -> pa.Table:
    """:func:`segmentation_row` over every complete store under ``STORE/scans``.

    Parameters
    ----------
    store_root : path
        The store root (``STORE``).
    client : distributed.Client, optional
        Map the stores over this cluster (one task per store); otherwise run here, one after
        another.
    pred_array, ref_array, labels
        Passed to :func:`segmentation_row`.

    Returns
    -------
    pyarrow.Table
        :data:`SEGMENTATION_SCHEMA`, rows ordered by store then organ; undefined metrics null.
    """
    paths = [p.url for p in (Location.of(store_root) / "scans").glob("*.zarr") if is_complete(p)]
    label_map = dict(labels)  # a plain dict pickles; a MappingProxyType does not
    per_store: list[list[dict[str, Any]]]
    if client is not None and paths:
        futures = client.map(
            segmentation_row,
            paths,
            pure=False,
            pred_array=pred_array,
            ref_array=ref_array,
            labels=label_map,
        )
        per_store = client.gather(futures)
    else:
        per_store = [
            segmentation_row(p, pred_array=pred_array, ref_array=ref_array, labels=label_map)
            for p in paths
        ]
    rows = [row for rows in per_store for row in rows]
    return pa.Table.from_pylist(rows, schema=SEGMENTATION_SCHEMA)


def summarise_segmentation(
    table: pa.Table, by: Sequence[str], *, metrics: Sequence[str] = METRIC_COLUMNS
) -> pa.Table:
    """Mean ± standard deviation of each metric per group, as the paper reports them.

    Parameters
    ----------
    table : pyarrow.Table
        Rows of :func:`segmentation_table`, possibly with extra columns to group by (e.g. a
        ``group`` column of "normal" / "steatosis" joined from the measurements).
    by : list of str
        Columns to group by, e.g. ``["cohort", "organ"]``.
    metrics : list of str
        Numeric columns to summarise.

    Returns
    -------
    pyarrow.Table
        One row per (group, metric), groups sorted: the ``by`` columns, ``metric``, ``n`` (rows
        with a defined value), ``n_undefined`` (null or NaN rows, excluded), ``mean`` and
        ``std`` (sample standard deviation, ddof = 1: null when n < 2; mean null when n = 0).
    """
    by = list(by)
    missing = [c for c in [*by, *metrics] if c not in table.column_names]
    require(not missing, f"columns {missing} not in the table; it has {table.column_names}")
    columns = [table[c].to_pylist() for c in by]
    keys = list(zip(*columns, strict=True)) if by else [()] * table.num_rows
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    values = {
        m: np.asarray(
            [np.nan if v is None else float(v) for v in table[m].to_pylist()], dtype=np.float64
        )
        for m in metrics
    }
    out: dict[str, list[Any]] = {c: [] for c in [*by, "metric", "n", "n_undefined", "mean", "std"]}
    for key in sorted(groups, key=lambda k: tuple((v is None, str(v)) for v in k)):
        idx = np.asarray(groups[key], dtype=np.intp)
        for m in metrics:
            v = values[m][idx]
            v = v[~np.isnan(v)]
            for c, k in zip(by, key, strict=True):
                out[c].append(k)
            out["metric"].append(m)
            out["n"].append(int(v.size))
            out["n_undefined"].append(int(idx.size - v.size))
            out["mean"].append(float(v.mean()) if v.size else None)
            out["std"].append(float(v.std(ddof=1)) if v.size > 1 else None)
    fields = [table.schema.field(c) for c in by] + [
        pa.field("metric", pa.string()),
        pa.field("n", pa.int64()),
        pa.field("n_undefined", pa.int64()),
        pa.field("mean", pa.float64()),
        pa.field("std", pa.float64()),
    ]
    return pa.Table.from_pydict(out, schema=pa.schema(fields))
