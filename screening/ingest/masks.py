"""Reference masks (from the ingest manifest) brought onto the CT grid as ``seg_reference``.

Both grids are canonical, so voxel centres map axis by axis through physical (LPS mm)
coordinates. Canonicalisation drops any rotation, so this mapping is only right when the mask's
voxel axes are parallel to the CT's (up to order and sign): :func:`axes_angle_deg` measures that,
and a mask rotated beyond :data:`MASK_AXES_TOLERANCE_DEG` is refused (MASK_GRID_MISMATCH).
When the grids are the same (shape, spacing, origin within tolerance) the mask is used as is;
otherwise it is resampled by nearest neighbour (never interpolated) and the
store records that it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from screening.constants import LIVER_LABEL, SPLEEN_LABEL
from screening.errors import ValidationError
from screening.reasons import ReasonCode

__all__ = [
    "MASK_AXES_TOLERANCE_DEG",
    "MaskOnGrid",
    "axes_angle_deg",
    "combine_labels",
    "mask_to_grid",
]

_ORIGIN_TOL_FRACTION = 0.05  # of the smallest voxel side
_SPACING_TOL_REL = 1e-3
#: Largest angle between a mask voxel axis and the CT voxel axis it is matched with.
MASK_AXES_TOLERANCE_DEG = 1.0


def axes_angle_deg(mask_direction: ArrayLike, ct_direction: ArrayLike) -> float:
    """Angle by which a mask's voxel axes are rotated away from the CT's, ignoring order and sign.

    Each mask axis is paired with one CT axis; the pairing (of the six) with the smallest
    largest angle is used, and the angle between two axes ignores their sign. So a mask on the
    CT's own axes, or on those axes flipped or permuted (both are canonicalised), gives 0, while
    a mask whose affine is rotated by 30 degrees about z gives 30.

    Parameters
    ----------
    mask_direction, ct_direction : (3, 3) array_like of float
        Row ``a`` is the direction (any nonzero length) of voxel axis ``a`` in LPS, as in
        :attr:`screening.ingest.nifti.NiftiGrid.direction` and
        :attr:`screening.ingest.volume.ScanVolume.direction`.

    Returns
    -------
    float
        The angle in degrees, in [0, 90].

    Raises
    ------
    ValueError
        When either input is not a (3, 3) array of finite values with nonzero rows.

    Examples
    --------
    >>> ct = np.eye(3)
    >>> axes_angle_deg([[0, 0, 1.0], [0, -2.0, 0], [1.0, 0, 0]], ct)  # permuted, flipped
    0.0
    >>> c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    >>> round(axes_angle_deg([[c, s, 0], [-s, c, 0], [0, 0, 1]], ct), 6)
    30.0
    """
    units = []
    for name, value in (("mask_direction", mask_direction), ("ct_direction", ct_direction)):
        m = np.asarray(value, dtype=np.float64)
        norms = np.linalg.norm(m, axis=-1, keepdims=True) if m.ndim == 2 else None
        if m.shape != (3, 3) or not np.all(np.isfinite(m)) or norms is None or np.any(norms == 0):
            raise ValueError(f"{name} must be a (3, 3) finite array with nonzero rows, got {m!r}")
        units.append(m / norms)
    cosines = np.clip(np.abs(units[0] @ units[1].T), 0.0, 1.0)  # [mask axis, ct axis]
    best = max(min(float(cosines[a, p[a]]) for a in range(3)) for p in permutations(range(3)))
    return float(np.degrees(np.arccos(best)))


@dataclass(frozen=True)
class MaskOnGrid:
    mask: NDArray[np.bool_]
    resampled: bool


def _same_grid(
    shape_a: Sequence[int],
    spacing_a: Sequence[float],
    origin_a: Sequence[float],
    shape_b: Sequence[int],
    spacing_b: Sequence[float],
    origin_b: Sequence[float],
) -> bool:
    if tuple(shape_a) != tuple(shape_b):
        return False
    sa, sb = np.asarray(spacing_a, float), np.asarray(spacing_b, float)
    if np.any(np.abs(sa - sb) > _SPACING_TOL_REL * sa):
        return False
    tol = _ORIGIN_TOL_FRACTION * float(sa.min())
    return bool(np.all(np.abs(np.asarray(origin_a, float) - np.asarray(origin_b, float)) <= tol))


def mask_to_grid(
    mask: NDArray[np.bool_],
    mask_spacing_mm: Sequence[float],
    mask_origin_mm: Sequence[float],
    ct_shape: Sequence[int],
    ct_spacing_mm: Sequence[float],
    ct_origin_mm: Sequence[float],
    path: str | None = None,
) -> MaskOnGrid:
    """Put a canonical mask on the CT grid (nearest neighbour when the grids differ).

    Spacings are ``[z, y, x]``; origins are LPS ``[x, y, z]`` of voxel (0, 0, 0), as stored.

    Raises
    ------
    ValidationError
        MASK_GRID_MISMATCH when the mask has voxels but none of them falls inside the CT.
    """
    if _same_grid(
        mask.shape, mask_spacing_mm, mask_origin_mm, ct_shape, ct_spacing_mm, ct_origin_mm
    ):
        return MaskOnGrid(mask, resampled=False)
    index = []
    valid = []
    for axis in range(3):
        lps = 2 - axis  # canonical z, y, x <-> origin components 2, 1, 0
        centres_mm = np.arange(ct_shape[axis]) * ct_spacing_mm[axis] + ct_origin_mm[lps]
        idx = np.rint((centres_mm - mask_origin_mm[lps]) / mask_spacing_mm[axis]).astype(np.int64)
        ok = (idx >= 0) & (idx < mask.shape[axis])
        index.append(np.clip(idx, 0, mask.shape[axis] - 1))
        valid.append(ok)
    out = mask[np.ix_(index[0], index[1], index[2])]
    out &= valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    if mask.any() and not out.any():
        raise ValidationError(
            f"the mask (shape {mask.shape}, origin {np.round(mask_origin_mm, 1).tolist()} mm) does "
            f"not overlap the CT (shape {tuple(ct_shape)}, origin "
            f"{np.round(ct_origin_mm, 1).tolist()} mm); expected a mask of this scan",
            reason=ReasonCode.MASK_GRID_MISMATCH,
            path=path,
        )
    return MaskOnGrid(np.ascontiguousarray(out), resampled=True)


def combine_labels(
    liver: NDArray[np.bool_] | None, spleen: NDArray[np.bool_] | None, shape: Sequence[int]
) -> tuple[NDArray[np.uint8], int]:
    """uint8 labels (1 liver, 2 spleen). Returns the labels and the count of voxels claimed by
    both masks (they stay liver: the liver is what is measured)."""
    labels = np.zeros(tuple(shape), dtype=np.uint8)
    if spleen is not None:
        labels[spleen] = SPLEEN_LABEL
    overlap = 0
    if liver is not None:
        if spleen is not None:
            overlap = int(np.count_nonzero(liver & spleen))
        labels[liver] = LIVER_LABEL
    return labels, overlap
