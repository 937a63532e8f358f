"""Quality-control checks: truncated liver, implausible volume, orientation, contrast.

Each check is a pure function returning a boolean (or the rules that fired) with its rule in
the docstring, so a radiologist can see why a scan was flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from screening.masks import OrganMask
from screening.measure.attenuation import OrganStats
from screening.measure.config import MeasureConfig
from screening.scan_circle import circle_radius

__all__ = [
    "body_centre_col",
    "contrast_evidence",
    "liver_truncated",
    "opacified_fraction",
    "orientation_suspect",
    "volume_implausible",
]

#: Above this HU a voxel is body (soft tissue and fat), not air, lung or most table tops.
_BODY_HU = -300.0


def liver_truncated(organ: OrganMask, shape: Sequence[int], rim_px: float) -> bool:
    """The liver reaches the first or last slice, the matrix edge, or the field-of-view circle.

    Scanners reconstruct inside the circle inscribed in the matrix; a mask within ``rim_px``
    pixels of that circle (or beyond it) is at the edge of what was imaged.
    """
    nz, ny, nx = (int(n) for n in shape)
    bz, by, bx = organ.box
    if bz.start == 0 or bz.stop == nz:
        return True
    if by.start == 0 or bx.start == 0 or by.stop == ny or bx.stop == nx:
        return True
    proj = organ.mask.any(axis=0)
    radius = circle_radius((ny, nx))[by, bx]
    return bool((radius[proj] > 1.0 - rim_px / min(ny, nx)).any())


def volume_implausible(stats: OrganStats, truncated: bool, cfg: MeasureConfig) -> bool:
    """Liver volume outside ``cfg.liver_volume_range_ml``; the lower bound is skipped for a
    truncated liver, whose visible part may rightly be small."""
    lo, hi = cfg.liver_volume_range_ml
    return stats.volume_ml > hi or (not truncated and stats.volume_ml < lo)


def body_centre_col(ct_hu: NDArray[Any], z_range: slice) -> float | None:
    """Mean x index of body voxels (HU > −300) over ``z_range``, on a 2-voxel lattice."""
    body = np.asarray(ct_hu[z_range.start : z_range.stop : 2, ::2, ::2]) > _BODY_HU
    per_col = np.count_nonzero(body, axis=(0, 1))
    if not per_col.any():
        return None
    return float(np.average(np.arange(per_col.size) * 2.0, weights=per_col))


def orientation_suspect(
    liver: OrganStats, spleen: OrganStats | None, body_col: float | None
) -> bool:
    """The liver's centroid lies on the patient's left of the body's centre, the spleen's on
    the right, or the spleen lies to the right of the liver (canonical x rises to the left)."""
    liver_x = liver.centroid_zyx[2]
    if body_col is not None and liver_x > body_col:
        return True
    if spleen is None:
        return False
    spleen_x = spleen.centroid_zyx[2]
    return spleen_x < liver_x or (body_col is not None and spleen_x < body_col)


def opacified_fraction(
    ct_hu: NDArray[Any], organ: OrganMask, interior: NDArray[np.bool_], threshold_hu: float
) -> float:
    """Share of the organ's interior voxels above ``threshold_hu`` after a 3 × 3 in-plane mean
    (edge pixels repeat, as ``scipy.ndimage.uniform_filter(mode="nearest")``).

    Contrast-filled portal and hepatic veins run through the liver at 150–250 HU; unenhanced
    blood is 30–60 HU. The small in-plane mean keeps noise (even 60 HU SD on thin slices)
    from reaching the threshold, and using the eroded interior keeps ribs out.

    A 3 × 3 mean can only exceed the threshold where some pixel of the 3 × 3 does, so the mean
    is computed at those candidates only (few on an unenhanced scan).
    """
    n = int(np.count_nonzero(interior))
    if n == 0:
        return 0.0
    sub = ct_hu[organ.box]
    hot = sub > threshold_hu
    if not hot.any():
        return 0.0
    near_hot = ndimage.maximum_filter(hot, size=(1, 3, 3), mode="constant", cval=False)
    z, y, x = np.nonzero(near_hot & interior)
    _, ny, nx = sub.shape
    total = np.zeros(z.size, dtype=np.float64)
    for dy in (-1, 0, 1):
        yy = np.clip(y + dy, 0, ny - 1)
        for dx in (-1, 0, 1):
            total += sub[z, yy, np.clip(x + dx, 0, nx - 1)]
    return float(np.count_nonzero(total / 9.0 > threshold_hu)) / n


def contrast_evidence(
    liver: OrganStats,
    spleen: OrganStats | None,
    vessel_fraction: float,
    cfg: MeasureConfig,
) -> tuple[str, ...]:
    """Which image rules point to contrast enhancement (empty: none).

    - ``liver_hu``: eroded liver median above ``cfg.contrast_liver_hu`` (90): unenhanced liver
      is 50–70 HU; portal-venous liver 100–130. Iron overload or amiodarone can also raise it.
    - ``spleen_hu``: eroded spleen median above ``cfg.contrast_spleen_hu`` (80): unenhanced
      spleen is 40–55 HU and enhances to 100+ in arterial and portal-venous phases.
    - ``vessels``: more than ``cfg.contrast_vessel_fraction`` of the liver interior above
      ``cfg.contrast_vessel_hu`` (see :func:`opacified_fraction`).

    An arterial-phase scan whose spleen is out of view can pass all three; the DICOM header
    check (ContrastBolusAgent) covers what it records.
    """
    fired = []
    liver_level = liver.median_hu_eroded if liver.median_hu_eroded is not None else liver.median_hu
    if liver_level > cfg.contrast_liver_hu:
        fired.append("liver_hu")
    if spleen is not None:
        level = spleen.median_hu_eroded if spleen.median_hu_eroded is not None else spleen.median_hu
        if level > cfg.contrast_spleen_hu:
            fired.append("spleen_hu")
    if vessel_fraction > cfg.contrast_vessel_fraction:
        fired.append("vessels")
    return tuple(fired)
