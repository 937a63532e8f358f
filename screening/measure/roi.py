"""AI-ROI: three circular regions of interest placed the way the paper's readers place them.

On the AI-2D slice and on the slices nearest ``roi_slice_offset_mm`` below and above it, a disk
of ``roi_area_mm2`` is centred ``roi_offset_mm`` medially from the liver's lateral-most pixel
(lowest x in canonical LPS: the image-leftmost pixel in radiological display), on that pixel's
row. Everything is in millimetres, so any pixel spacing works; with the paper's 0.7 mm pixels
the offset is its 30 pixels.

Rules the paper leaves open, fixed here:

- Several rows share the lateral-most column: the middle one of them (lower median) is used.
- A pixel belongs to the disk when its centre lies within the radius of the disk centre.
- A disk not wholly inside the liver mask on its slice is shifted along the row, in whole
  pixels, to the nearest position where it is (ties: medially), and marked ``moved``. When no
  position on the row fits, that ROI has no value (``no_fit``).
- The neighbouring slices are ``max(1, round(offset / spacing_z))`` slices away. When one of
  them lies outside the volume or holds no liver (typical of a chest CT that cuts the liver
  through its largest section), the triplet keeps its 10 mm span by taking the slice two steps
  away on the other side instead (``shifted``; offsets −5/0/+5 become 0/+5/+10 mm). When that
  fails too, the ROI has no value (``outside_volume`` / ``no_liver``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screening.masks import OrganMask

__all__ = ["ROI_LEVELS", "RoiResult", "disk_footprint", "measure_rois", "place_roi"]

#: Order of the three ROIs in ``roi_hu``: canonical z index rises toward the head.
ROI_LEVELS = ("inferior", "centre", "superior")
_EPS = 1e-9


@dataclass(frozen=True)
class RoiResult:
    """One ROI. ``centre_row`` / ``centre_col`` are voxel indices on the full slice (the column
    may be fractional); ``mean_hu`` is None unless ``status`` is ``placed`` or ``moved``.
    ``level`` is where the paper puts it; ``slice_shifted`` is True when its slice was replaced
    by the one on the other side (see the module notes)."""

    level: str
    slice_index: int
    status: str
    radius_mm: float
    centre_row: int | None = None
    centre_col: float | None = None
    moved_mm: float = 0.0
    n_pixels: int = 0
    mean_hu: float | None = None
    slice_shifted: bool = False

    @property
    def ok(self) -> bool:
        return self.status in ("placed", "moved")


def disk_footprint(
    radius_mm: float, spacing_yx: Sequence[float], frac_col: float
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Rows and column runs of a disk centred at (row 0, column ``frac_col``), frac in [0, 1).

    Returns ``(dy, lo, hi)``: for row offset ``dy[i]`` the disk covers columns ``lo[i]..hi[i]``
    (inclusive) relative to column 0. Pixel centres within ``radius_mm`` are inside.
    """
    sy, sx = (float(s) for s in spacing_yx)
    ry = math.floor(radius_mm / sy + _EPS)
    dy = np.arange(-ry, ry + 1)
    half = np.sqrt(np.maximum(radius_mm**2 - (dy * sy) ** 2, 0.0)) / sx
    lo = np.ceil(frac_col - half - _EPS).astype(np.intp)
    hi = np.floor(frac_col + half + _EPS).astype(np.intp)
    keep = hi >= lo
    return dy[keep].astype(np.intp), lo[keep], hi[keep]


def _fitting_columns(
    plane: NDArray[np.bool_],
    row: int,
    footprint: tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]],
) -> NDArray[np.bool_]:
    """For every base column j, whether the footprint at (row, j) lies wholly inside ``plane``.

    One prefix sum per footprint row: O(rows × columns), no 2-D erosion.
    """
    ny, nx = plane.shape
    base = np.arange(nx)
    ok = np.ones(nx, dtype=bool)
    for dy, lo, hi in zip(*footprint, strict=True):
        r = row + int(dy)
        if not 0 <= r < ny:
            return np.zeros(nx, dtype=bool)
        outside = np.concatenate(([0], np.cumsum(~plane[r], dtype=np.int64)))
        a, b = base + lo, base + hi
        inside = (a >= 0) & (b < nx)
        a, b = np.clip(a, 0, nx), np.clip(b + 1, 0, nx)
        ok &= inside & (outside[b] - outside[a] == 0)
    return ok


def place_roi(
    plane: NDArray[np.bool_],
    spacing_yx: Sequence[float],
    *,
    offset_mm: float,
    radius_mm: float,
) -> tuple[str, int | None, float | None, float, NDArray[np.intp] | None, NDArray[np.intp] | None]:
    """Place one ROI on a 2-D liver mask.

    Returns ``(status, row, col, moved_mm, rows, cols)`` where ``rows``/``cols`` index the
    ROI's pixels in ``plane``; status is ``placed``, ``moved``, ``no_liver`` or ``no_fit``.
    """
    columns = np.flatnonzero(plane.any(axis=0))
    if not columns.size:
        return "no_liver", None, None, 0.0, None, None
    lateral = int(columns[0])
    rows_at_edge = np.flatnonzero(plane[:, lateral])
    row = int(rows_at_edge[(rows_at_edge.size - 1) // 2])
    sx = float(spacing_yx[1])
    centre = round(lateral + offset_mm / sx, 9)
    j0 = math.floor(centre)
    frac = centre - j0
    footprint = disk_footprint(radius_mm, spacing_yx, frac)
    ok = _fitting_columns(plane, row, footprint)
    if 0 <= j0 < ok.size and ok[j0]:
        j, status = j0, "placed"
    else:
        candidates = np.flatnonzero(ok)
        if not candidates.size:
            return "no_fit", row, centre, 0.0, None, None
        # Nearest first; on a tie the medial (larger x) one.
        order = np.lexsort((-candidates, np.abs(candidates - j0)))
        j, status = int(candidates[order[0]]), "moved"
    dy, lo, hi = footprint
    lengths = hi - lo + 1
    rows = np.repeat(row + dy, lengths)
    cols = np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)]) + j
    return status, row, j + frac, (j - j0) * sx, rows, cols


def _roi_on_slice(
    ct_hu: NDArray[Any],
    liver: OrganMask,
    spacing_mm: Sequence[float],
    level: str,
    k: int,
    *,
    offset_mm: float,
    radius_mm: float,
) -> RoiResult:
    if not 0 <= k < ct_hu.shape[0]:
        return RoiResult(level, k, "outside_volume", radius_mm)
    z0, y0, x0 = liver.offset()
    local = k - z0
    if not 0 <= local < liver.mask.shape[0]:
        return RoiResult(level, k, "no_liver", radius_mm)
    status, row, col, moved, rows, cols = place_roi(
        liver.mask[local], spacing_mm[1:], offset_mm=offset_mm, radius_mm=radius_mm
    )
    full_row = None if row is None else row + y0
    full_col = None if col is None else col + x0
    if rows is None or cols is None:
        return RoiResult(level, k, status, radius_mm, centre_row=full_row, centre_col=full_col)
    values = np.asarray(ct_hu[k, rows + y0, cols + x0], dtype=np.float64)
    return RoiResult(
        level,
        k,
        status,
        radius_mm,
        centre_row=full_row,
        centre_col=full_col,
        moved_mm=moved,
        n_pixels=int(values.size),
        mean_hu=float(values.mean()),
    )


def measure_rois(
    ct_hu: NDArray[Any],
    liver: OrganMask,
    spacing_mm: Sequence[float],
    centre_slice: int,
    *,
    offset_mm: float,
    radius_mm: float,
    slice_offset_mm: float,
) -> tuple[RoiResult, RoiResult, RoiResult]:
    """The three ROIs (inferior, centre, superior) around ``centre_slice`` (full-volume z)."""
    step = max(1, round(slice_offset_mm / float(spacing_mm[0])))
    kw = {"offset_mm": offset_mm, "radius_mm": radius_mm}
    centre = _roi_on_slice(ct_hu, liver, spacing_mm, "centre", centre_slice, **kw)
    below = _roi_on_slice(ct_hu, liver, spacing_mm, "inferior", centre_slice - step, **kw)
    above = _roi_on_slice(ct_hu, liver, spacing_mm, "superior", centre_slice + step, **kw)
    missing = ("outside_volume", "no_liver")
    if below.status in missing and above.status not in missing:
        alt = _roi_on_slice(ct_hu, liver, spacing_mm, "inferior", centre_slice + 2 * step, **kw)
        if alt.status not in missing:
            below = replace(alt, slice_shifted=True)
    elif above.status in missing and below.status not in missing:
        alt = _roi_on_slice(ct_hu, liver, spacing_mm, "superior", centre_slice - 2 * step, **kw)
        if alt.status not in missing:
            above = replace(alt, slice_shifted=True)
    return below, centre, above
