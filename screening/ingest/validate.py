"""Geometry validation of a DICOM slice stack: pure functions on positions and orientations.

The checks run in this order, so each classic failure gets its own reason code:

1. one image orientation for all slices (within ``orientation_tolerance_deg``);
2. distinct positions along the slice normal (all equal: NOT_A_VOLUME; some equal:
   DUPLICATE_POSITION);
3. a uniform slice increment (gaps and uneven steps: SLICE_INCREMENT_INCONSISTENT);
4. no gantry tilt: the stack must advance along the slice normal (GANTRY_TILT; we reject rather
   than resample, so every stored volume is a plain rectilinear grid);
5. axial within ``axial_tolerance_deg`` (NOT_AXIAL);
6. at least ``min_slices`` slices (TOO_FEW_SLICES).

Tolerances are part of :class:`ValidationConfig`; the defaults are documented there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.errors import ValidationError
from screening.ingest.volume import CanonicalAxes, canonical_axes
from screening.reasons import ReasonCode

__all__ = ["SliceStack", "ValidationConfig", "validate_stack"]


@dataclass(frozen=True, kw_only=True)
class ValidationConfig(FrozenConfig):
    """Tolerances for accepting a slice stack as one axial volume.

    Parameters
    ----------
    min_slices
        Fewer slices than this are rejected (TOO_FEW_SLICES): 16 slices of 5 mm already cover
        only 8 cm, less than a liver.
    orientation_tolerance_deg
        Largest angle between any slice's row/column cosines and the first slice's.
    increment_tolerance_rel, increment_tolerance_mm
        A slice step may differ from the median step by at most
        ``max(increment_tolerance_mm, increment_tolerance_rel * median)``.
    tilt_tolerance_deg
        Largest angle between the stack direction (first to last position) and the slice normal.
    axial_tolerance_deg
        Largest angle between the slice normal and the patient's z axis (also between the rows
        and columns and x/y). Canonicalisation drops this small rotation; the original direction
        cosines are kept in the store attributes.
    max_voxels
        Larger volumes are rejected (SIZE_LIMIT) before any pixel data is read.
    """

    min_slices: int = 16
    orientation_tolerance_deg: float = 0.5
    increment_tolerance_rel: float = 0.05
    increment_tolerance_mm: float = 0.01
    tilt_tolerance_deg: float = 1.0
    axial_tolerance_deg: float = 10.0
    max_voxels: int = 1024 * 1024 * 1024

    def __post_init__(self) -> None:
        require(self.min_slices >= 2, f"min_slices must be >= 2, got {self.min_slices}")
        for name in (
            "orientation_tolerance_deg",
            "increment_tolerance_rel",
            "increment_tolerance_mm",
            "tilt_tolerance_deg",
            "axial_tolerance_deg",
        ):
            value = getattr(self, name)
            require(value >= 0, f"{name} must be >= 0, got {value}")
        require(self.max_voxels > 0, f"max_voxels must be > 0, got {self.max_voxels}")


@dataclass(frozen=True)
class SliceStack:
    """A validated stack: slice order, spacing and the mapping to canonical axes.

    ``order[k]`` is the index (into the input lists) of the slice at canonical z index ``k``
    (inferior to superior). ``step_mm`` is the median increment along the slice normal.
    """

    order: tuple[int, ...]
    step_mm: float
    row_cosine: NDArray[np.float64]  # direction of increasing column index (DICOM IOP[:3])
    col_cosine: NDArray[np.float64]  # direction of increasing row index (DICOM IOP[3:])
    normal: NDArray[np.float64]  # unit, pointing from order[0] to order[-1]
    axes: CanonicalAxes  # source axes (column, row, slice) -> canonical (z, y, x)


def _angle_deg(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    cos = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def _names(names: Sequence[str], idx: Sequence[int], limit: int = 4) -> str:
    shown = [names[i] for i in idx[:limit]]
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return ", ".join(shown) + more


def validate_stack(
    orientations: Sequence[Sequence[float]],
    positions: Sequence[Sequence[float]],
    names: Sequence[str],
    cfg: ValidationConfig,
    path: str | None = None,
) -> SliceStack:
    """Check a stack of slices and return its order and geometry, or raise ValidationError.

    Parameters
    ----------
    orientations : (n, 6)
        ImageOrientationPatient of each slice (row cosine, then column cosine), LPS.
    positions : (n, 3)
        ImagePositionPatient of each slice in mm, LPS.
    names
        File names used in messages (relative paths; never tag values).
    path
        The series folder, carried by the error.
    """
    n = len(positions)
    iop = np.asarray(orientations, dtype=np.float64).reshape(n, 6)
    ipp = np.asarray(positions, dtype=np.float64).reshape(n, 3)
    row, col = iop[0, :3], iop[0, 3:]
    for i in range(1, n):
        worst = max(_angle_deg(iop[i, :3], row), _angle_deg(iop[i, 3:], col))
        if worst > cfg.orientation_tolerance_deg:
            raise ValidationError(
                f"slices have different image orientations ({worst:.2f} deg apart, tolerance "
                f"{cfg.orientation_tolerance_deg} deg): {names[0]} vs {names[i]}; expected one "
                "orientation per series (mixed stacks or reformats in one series)",
                reason=ReasonCode.IMAGE_ORIENTATION_INCONSISTENT,
                path=path,
            )
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    sorted_along = along[order]
    steps = np.diff(sorted_along)

    if n > 1 and np.ptp(along) < cfg.increment_tolerance_mm:
        raise ValidationError(
            f"all {n} slices lie at the same position ({sorted_along[0]:.2f} mm along the "
            f"normal): {_names(names, list(range(n)))}; expected a stack of distinct slices",
            reason=ReasonCode.NOT_A_VOLUME,
            path=path,
        )
    dup = np.flatnonzero(steps < cfg.increment_tolerance_mm)
    if dup.size:
        pairs = [names[int(order[i])] + " = " + names[int(order[i + 1])] for i in dup[:3]]
        raise ValidationError(
            f"{dup.size} pair(s) of slices share a position: {'; '.join(pairs)}; expected one "
            "slice per position (two acquisitions in one series, or duplicate files with "
            "different SOPInstanceUIDs)",
            reason=ReasonCode.DUPLICATE_POSITION,
            path=path,
        )
    if n >= 3:
        median = float(np.median(steps))
        tol = max(cfg.increment_tolerance_mm, cfg.increment_tolerance_rel * median)
        bad = np.flatnonzero(np.abs(steps - median) > tol)
        if bad.size:
            i = int(bad[0])
            ratio = steps[i] / median
            what = (
                f"a gap of about {round(ratio) - 1} missing slice(s)"
                if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1
                else "an uneven step"
            )
            raise ValidationError(
                f"slice increment is not uniform: {what} ({steps[i]:.3f} mm vs median "
                f"{median:.3f} mm, tolerance {tol:.3f} mm) between "
                f"{names[int(order[i])]} and {names[int(order[i + 1])]}"
                f"{f' ({bad.size} such steps)' if bad.size > 1 else ''}",
                reason=ReasonCode.SLICE_INCREMENT_INCONSISTENT,
                path=path,
            )
    step_mm = float(np.median(steps)) if n > 1 else 0.0
    if n > 1:
        tilt = _angle_deg(ipp[order[-1]] - ipp[order[0]], normal)
        if tilt > cfg.tilt_tolerance_deg:
            raise ValidationError(
                f"the stack advances {tilt:.1f} deg off the slice normal (gantry tilt; "
                f"tolerance {cfg.tilt_tolerance_deg} deg); expected a rectilinear volume. "
                "Tilted series are rejected, not resampled",
                reason=ReasonCode.GANTRY_TILT,
                path=path,
            )
    axes = canonical_axes(np.stack([row, col, normal]))
    if axes.perm[0] != 2 or axes.obliquity_deg > cfg.axial_tolerance_deg:
        raise ValidationError(
            f"the series is not axial (slice normal {np.round(normal, 3).tolist()}, "
            f"{axes.obliquity_deg:.1f} deg from the nearest axis; tolerance "
            f"{cfg.axial_tolerance_deg} deg); expected axial slices",
            reason=ReasonCode.NOT_AXIAL,
            path=path,
        )
    if n < cfg.min_slices:
        raise ValidationError(
            f"only {n} slice(s); at least {cfg.min_slices} are needed for a liver volume "
            "(ValidationConfig.min_slices)",
            reason=ReasonCode.TOO_FEW_SLICES,
            path=path,
        )
    return SliceStack(
        order=tuple(int(i) for i in order),
        step_mm=step_mm,
        row_cosine=row,
        col_cosine=col,
        normal=normal,
        axes=axes,
    )
