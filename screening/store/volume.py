"""The unit a scan store holds: one CT volume in canonical orientation with its geometry.

Readers (:mod:`screening.ingest`) make it; :func:`screening.store.scan.write_scan_store` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["ScanVolume"]


@dataclass(frozen=True)
class ScanVolume:
    """One scan on its native grid, canonical orientation.

    Attributes
    ----------
    ct_hu : (z, y, x) int16
        Hounsfield units; z toward Superior, y toward Posterior, x toward the patient's Left.
    spacing_mm : (3,) float
        ``[z, y, x]`` voxel spacing in mm.
    origin_mm : (3,) float
        LPS position ``[x, y, z]`` in mm of voxel ``(0, 0, 0)`` (as in :mod:`screening.geometry`).
    direction : (3, 3) float
        The source's direction cosines before canonicalisation: row ``a`` is the LPS unit vector
        of source array axis ``a`` (DICOM: column, row, slice; NIfTI: i, j, k).
    source : dict
        Source metadata (format, scanner, covariates, how HU were derived). No identifiers.
    ct_sha256 : str or None
        :func:`screening.store.scan.ct_sha256` of ``ct_hu`` when the reader computed it while
        filling the volume (slice by slice, while each slice is in cache), else None.
    """

    ct_hu: NDArray[np.int16]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: tuple[tuple[float, ...], ...]
    source: dict[str, Any] = field(default_factory=dict)
    ct_sha256: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        z, y, x = self.ct_hu.shape
        return (z, y, x)
