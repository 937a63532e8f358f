"""Tissue classes of the phantom and their attenuation (HU), contrast enhancement and noise.

Values are typical of adult non-contrast CT at 120 kVp (liver 55–65 HU, spleen 45–50,
muscle ~50, unenhanced blood ~40, fat ~-100, lung ~-850). They deliberately overlap: liver,
spleen, muscle, heart, diaphragm and vessels cannot be told apart by intensity alone.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from screening.reasons import ContrastPhase

__all__ = ["Tissue", "enhancement_hu", "hu_lookup", "noise_sd_hu", "unenhanced_hu"]


class Tissue(IntEnum):
    """Labels of the phantom's tissue map (uint8). Truth masks are derived from these."""

    OUTSIDE = 0  # air around the patient
    FAT = 1
    MUSCLE = 2
    LUNG = 3
    BONE_CORTICAL = 4
    BONE_CANCELLOUS = 5
    RIB = 6
    DISC = 7
    CSF = 8
    HEART = 9
    AORTA = 10
    VEIN = 11  # IVC and extrahepatic portal vein
    LIVER = 12
    LIVER_VESSEL = 13  # intrahepatic hepatic and portal veins (part of the liver mask)
    SPLEEN = 14
    KIDNEY = 15
    STOMACH_WALL = 16
    FLUID = 17  # stomach content, gallbladder bile
    GAS = 18  # bowel and stomach air
    BOWEL = 19
    DIAPHRAGM = 20
    TABLE = 21


#: Labels whose union is the liver truth mask (experts include intrahepatic vessels).
LIVER_TISSUES = (Tissue.LIVER, Tissue.LIVER_VESSEL)

_BASE_HU: dict[Tissue, float] = {
    Tissue.OUTSIDE: -1000.0,
    Tissue.FAT: -100.0,
    Tissue.MUSCLE: 50.0,
    Tissue.LUNG: -860.0,
    Tissue.BONE_CORTICAL: 800.0,
    Tissue.BONE_CANCELLOUS: 220.0,
    Tissue.RIB: 400.0,
    Tissue.DISC: 80.0,
    Tissue.CSF: 10.0,
    Tissue.HEART: 42.0,
    Tissue.AORTA: 40.0,
    Tissue.VEIN: 40.0,
    Tissue.LIVER: 58.0,  # replaced by the case's liver HU
    Tissue.LIVER_VESSEL: 40.0,
    Tissue.SPLEEN: 47.0,  # replaced by the case's spleen HU
    Tissue.KIDNEY: 30.0,
    Tissue.STOMACH_WALL: 40.0,
    Tissue.FLUID: 10.0,
    Tissue.GAS: -990.0,
    Tissue.BOWEL: 30.0,
    Tissue.DIAPHRAGM: 50.0,
    Tissue.TABLE: -400.0,
}

# Enhancement (HU added) by phase. Arterial: bright aorta and heart, little hepatic
# enhancement, heterogeneous spleen. Portal venous: liver ~+50, portal and hepatic veins
# ~+140, aorta ~+160 (cf. the real HCC048 fixture: liver ≈ 100 HU, aorta p95 ≈ 228 HU).
_ENHANCEMENT_HU: dict[ContrastPhase, dict[Tissue, float]] = {
    ContrastPhase.NONE: {},
    ContrastPhase.ARTERIAL: {
        Tissue.AORTA: 260.0,
        Tissue.HEART: 160.0,
        Tissue.VEIN: 40.0,
        Tissue.LIVER: 15.0,
        Tissue.LIVER_VESSEL: 30.0,
        Tissue.SPLEEN: 70.0,
        Tissue.KIDNEY: 130.0,
        Tissue.BOWEL: 20.0,
        Tissue.STOMACH_WALL: 30.0,
        Tissue.MUSCLE: 5.0,
        Tissue.DIAPHRAGM: 5.0,
    },
    ContrastPhase.PORTAL_VENOUS: {
        Tissue.AORTA: 160.0,
        Tissue.HEART: 120.0,
        Tissue.VEIN: 130.0,
        Tissue.LIVER: 50.0,
        Tissue.LIVER_VESSEL: 140.0,
        Tissue.SPLEEN: 75.0,
        Tissue.KIDNEY: 140.0,
        Tissue.BOWEL: 30.0,
        Tissue.STOMACH_WALL: 40.0,
        Tissue.MUSCLE: 10.0,
        Tissue.DIAPHRAGM: 10.0,
    },
}


def unenhanced_hu(tissue: Tissue) -> float:
    """Default unenhanced HU of a tissue."""
    return _BASE_HU[tissue]


def enhancement_hu(tissue: Tissue, phase: ContrastPhase) -> float:
    """HU added to ``tissue`` by contrast in ``phase``."""
    return _ENHANCEMENT_HU[phase].get(tissue, 0.0)


def hu_lookup(
    *,
    liver_hu: float,
    spleen_hu: float,
    phase: ContrastPhase,
    jitter_hu: dict[Tissue, float] | None = None,
) -> NDArray[np.float32]:
    """Lookup table (256,) from tissue label to HU as imaged, contrast included.

    ``liver_hu`` and ``spleen_hu`` are unenhanced; ``jitter_hu`` adds per-case offsets.
    """
    table = np.full(256, _BASE_HU[Tissue.OUTSIDE], dtype=np.float32)
    jitter = jitter_hu or {}
    for tissue, hu in _BASE_HU.items():
        base = {Tissue.LIVER: liver_hu, Tissue.SPLEEN: spleen_hu}.get(tissue, hu)
        table[tissue] = base + jitter.get(tissue, 0.0) + enhancement_hu(tissue, phase)
    return table


def noise_sd_hu(
    *, kvp: float, exposure_mas: float, spacing_mm: tuple[float, float, float]
) -> float:
    """Image noise standard deviation (HU) from tube voltage, exposure and voxel size.

    σ scales as 1/sqrt(mAs), as (120/kVp)^1.5 and as 1/sqrt(voxel volume); the reference is
    20 HU at 120 kV, 100 mAs and 0.7 × 0.7 × 1.25 mm, typical of a standard soft-tissue kernel.
    Clipped to [3, 60] HU so coarse test volumes still carry visible noise.
    """
    voxel_mm3 = float(np.prod(spacing_mm))
    sd = 20.0 * np.sqrt(100.0 / exposure_mas) * (120.0 / kvp) ** 1.5 * np.sqrt(0.6125 / voxel_mm3)
    return float(np.clip(sd, 3.0, 60.0))
