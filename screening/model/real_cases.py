"""Real CT scans with reference masks, for validating segmenters (tests, ``make bench``).

Readers for the public fixtures under ``../shared/data/real`` (never copied into the
repository): the TotalSegmentator example (non-contrast abdomen-pelvis CT, 3 mm, liver and
spleen masks made by TotalSegmentator) and LiTS case 117 (portal-venous CT, tight box around the
liver, manual liver mask). Each comes back in canonical ``(z, y, x)`` LPS order with
``spacing_mm``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from screening.errors import attempt_import

__all__ = [
    "LITS117_SPACING_MM",
    "RealCase",
    "load_lits117",
    "load_totalsegmentator_example",
    "real_cases",
]

#: LiTS 117 as shipped (128³) has no voxel size; estimated from anatomy (vertebral body width,
#: one vertebral level): about 1.15 × 1.10 × 1.35 mm (x, y, z).
LITS117_SPACING_MM: tuple[float, float, float] = (1.35, 1.10, 1.15)


@dataclass(frozen=True)
class RealCase:
    name: str
    ct_hu: NDArray[np.int16]
    spacing_mm: tuple[float, float, float]
    liver: NDArray[np.bool_]
    spleen: NDArray[np.bool_] | None
    note: str


def load_totalsegmentator_example(root: str | os.PathLike[str]) -> RealCase:
    """Patient A of the TotalSegmentator example (RAS NIfTI → canonical)."""
    from screening.ingest.nifti import read_nifti_ct, read_nifti_labels

    ts = Path(root) / "totalsegmentator-example"
    vol = read_nifti_ct(str(ts / "example_ct.nii.gz"), 10**9)
    liver, _ = read_nifti_labels(str(ts / "example_seg" / "liver.nii.gz"), None, 10**9)
    spleen, _ = read_nifti_labels(str(ts / "example_seg" / "spleen.nii.gz"), None, 10**9)
    sp = tuple(float(s) for s in vol.spacing_mm)
    return RealCase(
        "totalsegmentator-example",
        vol.ct_hu,
        (sp[0], sp[1], sp[2]),
        liver,
        spleen,
        "non-contrast abdomen-pelvis CT, 3 mm; reference = TotalSegmentator's masks",
    )


def load_lits117(root: str | os.PathLike[str]) -> RealCase:
    """LiTS 117 (MRC, 128³ HU). Worked out from the anatomy: axis 0 runs foot-ward (the liver
    dome at index 0), axis 1 toward posterior (kidneys at high index), axis 2 toward the
    patient's right (liver at high index, stomach at low): axes 0 and 2 are flipped."""
    mrcfile = attempt_import("mrcfile", "dev")
    lits = Path(root) / "lits-117"
    with mrcfile.open(lits / "img_117.mrc.gz") as f:  # type: ignore[attr-defined]
        img = np.asarray(f.data, dtype=np.float32)
    with mrcfile.open(lits / "lab_117.mrc.gz") as f:  # type: ignore[attr-defined]
        lab = np.asarray(f.data)
    ct = np.clip(np.rint(img[::-1, :, ::-1]), -1024, 32767).astype(np.int16)
    liver = np.ascontiguousarray(lab[::-1, :, ::-1] > 0)
    return RealCase(
        "lits-117",
        np.ascontiguousarray(ct),
        LITS117_SPACING_MM,
        liver,
        None,
        "portal-venous CT, tight box cutting the liver; manual reference (LiTS)",
    )


def real_cases(root: str | os.PathLike[str]) -> list[RealCase]:
    """Every real case with a reference liver mask under ``root``."""
    return [load_totalsegmentator_example(root), load_lits117(root)]
