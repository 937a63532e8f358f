"""From liver attenuation to a decision: steatosis flags, MRI-PDFF estimate, grade."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from screening.reasons import SteatosisGrade

__all__ = ["PDFF_INTERCEPT_PCT", "PDFF_SLOPE_PCT_PER_HU", "pdff_from_hu", "steatosis_grade"]

#: Pickhardt et al., AJR 2018;211:W151–W157: PDFF (%) ≈ −0.58 × unenhanced liver HU + 38.2.
PDFF_SLOPE_PCT_PER_HU = -0.58
PDFF_INTERCEPT_PCT = 38.2


def pdff_from_hu(
    hu: float, slope: float = PDFF_SLOPE_PCT_PER_HU, intercept: float = PDFF_INTERCEPT_PCT
) -> float:
    """MRI-PDFF estimate (%) from unenhanced liver HU, clipped to [0, 100].

    >>> pdff_from_hu(40.0)
    15.0
    """
    return float(np.clip(slope * hu + intercept, 0.0, 100.0).round(10))


def steatosis_grade(
    pdff_pct: float, cutoffs: Sequence[float] = (5.0, 15.0, 25.0)
) -> SteatosisGrade:
    """none / mild / moderate / severe from a PDFF (%) and three rising cut-offs (>= is in)."""
    mild, moderate, severe = cutoffs
    if pdff_pct >= severe:
        return SteatosisGrade.SEVERE
    if pdff_pct >= moderate:
        return SteatosisGrade.MODERATE
    if pdff_pct >= mild:
        return SteatosisGrade.MILD
    return SteatosisGrade.NONE
