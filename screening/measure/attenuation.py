"""Organ attenuation statistics (AI-3D) and the AI-2D slice.

Pure functions on native HU (``ct_hu``, any numeric dtype) and an :class:`OrganMask`; all
work happens inside the organ's bounding box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screening.masks import OrganMask

__all__ = ["OrganStats", "largest_section_slice", "organ_stats", "slice_mean_hu"]


@dataclass(frozen=True)
class OrganStats:
    """Attenuation (HU) and size of one organ mask; eroded values are None when erosion empties
    the mask (an organ thinner than twice the erosion radius)."""

    n_voxels: int
    volume_ml: float
    mean_hu: float
    median_hu: float
    std_hu: float
    p05_hu: float
    p95_hu: float
    n_voxels_eroded: int
    mean_hu_eroded: float | None
    median_hu_eroded: float | None
    centroid_zyx: tuple[float, float, float]  # voxel index in the full volume


def _values(ct_hu: NDArray[Any], organ: OrganMask, mask: NDArray[np.bool_]) -> NDArray[Any]:
    values: NDArray[Any] = ct_hu[organ.box][mask]
    return values


def _summary(values: NDArray[Any]) -> tuple[float, float, float, float, float]:
    """(mean, std, p05, median, p95) of ``values``; std is the population SD, percentiles as
    ``numpy.percentile`` (linear interpolation between order statistics).

    Integer HU go through a histogram: exact, and several times faster than sorting a full-size
    liver's millions of voxels.
    """
    if values.dtype.kind not in "iu":
        v = values.astype(np.float64, copy=False)
        p05, p50, p95 = np.percentile(v, [5.0, 50.0, 95.0])
        return float(v.mean()), float(v.std()), float(p05), float(p50), float(p95)
    lo = int(values.min())
    counts = np.bincount((values.astype(np.int64) - lo).ravel())
    hu = np.arange(counts.size, dtype=np.float64) + lo
    n = int(values.size)
    mean = float(counts @ hu) / n
    var = float(counts @ (hu - mean) ** 2) / n
    cum = np.cumsum(counts)

    def order_stat(i: NDArray[np.int64]) -> NDArray[np.float64]:  # i-th smallest, 0-based
        found: NDArray[np.float64] = hu[np.searchsorted(cum, i, side="right")]
        return found

    pos = (n - 1) * np.array([0.05, 0.5, 0.95])
    below = np.floor(pos).astype(np.int64)
    a, b = order_stat(below), order_stat(np.minimum(below + 1, n - 1))
    p05, p50, p95 = a + (pos - below) * (b - a)
    return mean, float(np.sqrt(var)), float(p05), float(p50), float(p95)


def organ_stats(
    ct_hu: NDArray[Any],
    organ: OrganMask,
    spacing_mm: Sequence[float],
    eroded: NDArray[np.bool_],
) -> OrganStats:
    """Mean (AI-3D), median, std (population), 5th/95th percentiles (linear interpolation, as
    ``numpy.percentile``) over every voxel of ``organ``, and mean/median over ``eroded`` (the
    organ's mask eroded, same box: :func:`screening.masks.erode_mm`)."""
    values = _values(ct_hu, organ, organ.mask)
    mean, std, p05, median, p95 = _summary(values)
    inner = _values(ct_hu, organ, eroded)
    inner_summary = _summary(inner) if inner.size else None
    centroid = tuple(
        float(np.average(np.arange(n), weights=np.count_nonzero(organ.mask, axis=others))) + off
        for n, others, off in zip(
            organ.mask.shape, ((1, 2), (0, 2), (0, 1)), organ.offset(), strict=True
        )
    )
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    return OrganStats(
        n_voxels=int(values.size),
        volume_ml=values.size * voxel_ml,
        mean_hu=mean,
        median_hu=median,
        std_hu=std,
        p05_hu=p05,
        p95_hu=p95,
        n_voxels_eroded=int(inner.size),
        mean_hu_eroded=inner_summary[0] if inner_summary else None,
        median_hu_eroded=inner_summary[3] if inner_summary else None,
        centroid_zyx=(centroid[0], centroid[1], centroid[2]),
    )


def largest_section_slice(organ: OrganMask) -> int:
    """z index (full volume) of the axial slice with the largest cross-section of ``organ``.

    Tie rule: among slices with the same largest pixel count, the one nearest the organ's
    z centroid wins; if two are equally near, the lower (more inferior) index. On one grid all
    pixels have the same area, so pixel count is area.
    """
    areas = np.count_nonzero(organ.mask.reshape(organ.mask.shape[0], -1), axis=1)
    tied = np.flatnonzero(areas == areas.max())
    if tied.size > 1:
        z_centroid = float(np.average(np.arange(areas.size), weights=areas))
        tied = tied[np.argsort(np.abs(tied - z_centroid), kind="stable")]
    return int(tied[0]) + int(organ.box[0].start)


def slice_mean_hu(ct_hu: NDArray[Any], organ: OrganMask, z_index: int) -> float:
    """Mean HU of ``organ``'s pixels on axial slice ``z_index`` (full-volume index), AI-2D."""
    local = z_index - int(organ.box[0].start)
    plane = organ.mask[local]
    values = np.asarray(ct_hu[z_index][organ.box[1:]][plane], dtype=np.float64)
    return float(values.mean())
