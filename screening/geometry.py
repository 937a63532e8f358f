"""Coordinate conventions shared by readers, writers and the synthetic generator
(docs/data-contracts.md).

Canonical volumes are indexed ``(z, y, x)`` with x toward the patient's Left, y toward
Posterior and z toward Superior (DICOM LPS). Column 0 is the patient's right, as in
radiological display. Affines here map homogeneous *index* coordinates ``(k, j, i, 1)`` in
``(z, y, x)`` order to LPS millimetres, except where a function says it follows NIfTI's
``(i, j, k)`` → RAS convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "PATIENT_POSITIONS",
    "canonical_affine",
    "lps_to_ras",
    "nifti_affine_from_canonical",
    "reorient_nifti",
]

#: Patient positions the generator and the readers understand (DICOM PatientPosition).
PATIENT_POSITIONS: tuple[str, ...] = ("HFS", "FFS", "HFP", "FFP")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def canonical_affine(
    spacing_mm: Sequence[float], origin_mm: Sequence[float]
) -> NDArray[np.float64]:
    """Affine from canonical index ``(k, j, i, 1)`` (z, y, x order) to LPS mm.

    Parameters
    ----------
    spacing_mm : (3,) float
        ``[z, y, x]`` voxel spacing in mm.
    origin_mm : (3,) float
        LPS position ``[x_L, y_P, z_S]`` of voxel ``(0, 0, 0)`` in mm.

    >>> canonical_affine([2.5, 0.7, 0.7], [0, 0, 0]) @ [1, 0, 0, 1]
    array([0. , 0. , 2.5, 1. ])
    """
    dz, dy, dx = (float(s) for s in spacing_mm)
    ox, oy, oz = (float(o) for o in origin_mm)
    return np.array(
        [[0.0, 0.0, dx, ox], [0.0, dy, 0.0, oy], [dz, 0.0, 0.0, oz], [0.0, 0.0, 0.0, 1.0]]
    )


def lps_to_ras(affine_lps: NDArray[np.float64]) -> NDArray[np.float64]:
    """Re-express an affine whose output is LPS so that its output is RAS (negate x and y)."""
    return _LPS_TO_RAS @ affine_lps


def nifti_affine_from_canonical(
    spacing_mm: Sequence[float], origin_mm: Sequence[float]
) -> NDArray[np.float64]:
    """NIfTI affine (array axes ``(i, j, k)`` = canonical ``(x, y, z)``, output RAS mm).

    Use with ``volume_zyx.transpose(2, 1, 0)``; the array axes then run L, P, S (axcodes LPS).
    """
    zyx_to_xyz = np.array(
        [[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )
    return lps_to_ras(canonical_affine(spacing_mm, origin_mm) @ zyx_to_xyz)


def reorient_nifti(
    data_ijk: NDArray[np.generic], affine_ras: NDArray[np.float64], axcodes: Sequence[str]
) -> tuple[NDArray[np.generic], NDArray[np.float64]]:
    """Flip/transpose a NIfTI array and affine so the array axes follow ``axcodes``.

    ``axcodes`` are nibabel's (for example ``("R", "A", "S")`` or ``("L", "P", "S")``): the
    world direction each array axis increases toward. The physical image is unchanged.
    """
    from nibabel import orientations as ornt

    current = ornt.io_orientation(affine_ras)
    target = ornt.axcodes2ornt(tuple(axcodes))
    transform = ornt.ornt_transform(current, target)
    data = ornt.apply_orientation(data_ijk, transform)
    affine = affine_ras @ ornt.inv_ornt_aff(transform, data_ijk.shape)
    return np.ascontiguousarray(data), affine
