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
    "chest_reconstruction",
    "load_lits117",
    "load_totalsegmentator_example",
    "real_cases",
    "with_noise",
]

#: LiTS 117 as shipped (128³) has no voxel size; estimated from the anatomy, canonical (z, y, x):
#: z from the vertebral levels (discs every 23–24 voxels over L1–L2, about 35 mm a level; 20
#: voxels at T11), y and x from the L1–L2 vertebral body (26 voxels deep, 31 wide) and the round
#: aorta (13 × 13 voxels, so y and x alike). Dice moves by < 0.01 across 1.35–1.5 mm in z and
#: 1.1–1.3 mm in-plane (BENCHMARKS.md "Real CT").
LITS117_SPACING_MM: tuple[float, float, float] = (1.5, 1.25, 1.25)


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
    """LiTS 117 (MRC, 128³ HU), worked out from the anatomy. The MRC array is the NIfTI voxel
    array written as is, in (i, j, k) order: axis 0 runs toward the patient's left (the liver at
    low index, the spine near the high end), axis 1 toward posterior (the vertebrae at high
    index), axis 2 toward the head (kidneys low, the dome high). Canonical ``(z, y, x)`` LPS is
    therefore a plain transpose, no flip (the package's own viewer output does the same
    ``transpose(2, 1, 0)``).
    """
    mrcfile = attempt_import("mrcfile", "dev")
    lits = Path(root) / "lits-117"
    with mrcfile.open(lits / "img_117.mrc.gz") as f:  # type: ignore[attr-defined]
        img = np.asarray(f.data, dtype=np.float32)
    with mrcfile.open(lits / "lab_117.mrc.gz") as f:  # type: ignore[attr-defined]
        lab = np.asarray(f.data)
    ct = np.clip(np.rint(img.transpose(2, 1, 0)), -1024, 32767).astype(np.int16)
    liver = np.ascontiguousarray(lab.transpose(2, 1, 0) > 0)
    return RealCase(
        "lits-117",
        np.ascontiguousarray(ct),
        LITS117_SPACING_MM,
        liver,
        None,
        "portal-venous CT, tight box cutting the liver; manual reference (LiTS)",
    )


def chest_reconstruction(case: RealCase, first_z: int, diameter_mm: float) -> RealCase:
    """``case`` as a tight chest-CT reconstruction: slices from ``first_z`` up (the liver cut
    below), a square matrix of ``diameter_mm`` centred on the body, and padding (``HU_MIN``, as
    ingest stores it) outside the scan circle inscribed in it, which then cuts through the body
    (LIDC-IDRI reconstructs 236–350 mm; the liver reaches that circle). The reference keeps the
    liver inside the circle only: nothing outside was imaged."""
    from screening.ingest.volume import HU_MIN
    from screening.scan_circle import circle_radius

    ct, liver = case.ct_hu[first_z:], case.liver[first_z:]
    body_zyx = ct > -300
    centre = [
        round(float(np.flatnonzero(body_zyx.any(axis=axes)).mean())) for axes in ((0, 2), (0, 1))
    ]
    size = [round(diameter_mm / case.spacing_mm[1 + a]) for a in (0, 1)]
    pad = max(size)
    ct = np.pad(ct, ((0, 0), (pad, pad), (pad, pad)), constant_values=HU_MIN)
    liver = np.pad(liver, ((0, 0), (pad, pad), (pad, pad)))
    box = (
        slice(None),
        *(slice(pad + c - n // 2, pad + c - n // 2 + n) for c, n in zip(centre, size, strict=True)),
    )
    outside = circle_radius((size[0], size[1])) > 1.0
    ct = ct[box].copy()
    ct[:, outside] = HU_MIN
    liver = liver[box].copy()
    liver[:, outside] = False
    top_mm = ct.shape[0] * case.spacing_mm[0]
    return RealCase(
        f"{case.name}, top {top_mm:g} mm in a {diameter_mm:g} mm scan circle",
        ct,
        case.spacing_mm,
        liver,
        None,
        "chest-CT reconstruction: liver cut below and by the scan circle",
    )


def with_noise(case: RealCase, sd_hu: float, seed: int = 0) -> RealCase:
    """``case`` with seeded noise of SD ``sd_hu`` on its voxels, slightly correlated in-plane as
    CT noise is: a low-dose scan with a sharp kernel. The reference masks are kept."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).standard_normal(case.ct_hu.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0, 0.6, 0.6))
    noise *= sd_hu / noise.std()
    ct = np.clip(case.ct_hu + np.rint(noise), -1024, 3071).astype(np.int16)
    return RealCase(
        f"{case.name}, noise SD {sd_hu:g} HU", ct, case.spacing_mm, case.liver, case.spleen,
        "low-dose noise",
    )  # fmt: skip


def real_cases(root: str | os.PathLike[str]) -> list[RealCase]:
    """Every real case with a reference liver mask under ``root``."""
    return [load_totalsegmentator_example(root), load_lits117(root)]
