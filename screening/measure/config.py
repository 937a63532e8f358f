"""Configuration of the measurement stage (part of ``pipeline_id``)."""

from __future__ import annotations

from dataclasses import dataclass

from screening.config import FrozenConfig, require
from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.preprocess import PAPER_SPACING_MM

__all__ = ["MEASURE_GRIDS", "PDFF_SOURCES", "MeasureConfig"]

#: ``native``: the stored ``ct`` HU on the acquisition grid (no interpolated HU);
#: ``model``: CT resampled linearly to ``model_spacing_mm`` first, as the paper measured.
MEASURE_GRIDS = ("native", "model")
#: Which liver attenuation feeds the MRI-PDFF estimate and the grade.
PDFF_SOURCES = ("roi", "3d", "3d_eroded", "2d")


@dataclass(frozen=True, kw_only=True)
class MeasureConfig(FrozenConfig):
    """How liver and spleen attenuation are measured, classified and checked.

    Defaults and where they come from:

    - ``steatosis_threshold_hu`` 40: steatosis when liver attenuation <= 40 HU (the paper,
      after Boyce et al., AJR 2010; Pickhardt et al., AJR 2012).
    - ``roi_offset_mm`` 21 and ``roi_area_mm2`` 200: the paper centres each ROI 30 pixels of
      0.7 mm medially from the liver's lateral-most pixel and sizes it "around 2.0 cm²"
      (radius ≈ 7.98 mm; the paper's "around 10 pixels" radius would be 1.5 cm²: the stated
      area is kept). ``roi_slice_offset_mm`` 5: the two neighbouring slices.
    - ``pdff_slope`` −0.58 and ``pdff_intercept`` 38.2 %: unenhanced CT HU to MRI-PDFF,
      Pickhardt et al., AJR 2018;211:W151–W157. It was calibrated on parenchymal ROIs, hence
      ``pdff_source`` ``roi``.
    - ``grade_cutoffs_pct`` 5 / 15 / 25 %: MRI-PDFF mild / moderate / severe, as summarised in
      Starekova et al., Radiology 2021;301:250–262 (5 % is the accepted steatosis threshold).
    - ``ls_ratio_threshold`` 1.0: liver/spleen attenuation ratio < 1 (the paper's discussion;
      Kodama et al., AJR 2007).
    - ``erosion_mm`` 3: removes the partial-volume rim before the eroded statistics.
    - ``liver_volume_range_ml`` 500–4000: adult livers are about 1,000–2,500 ml; outside the
      range the mask is suspect (the lower bound is not applied to truncated livers).
    - Contrast image evidence (see :func:`screening.measure.qc.contrast_evidence`): eroded
      liver median above ``contrast_liver_hu`` 90, eroded spleen median above
      ``contrast_spleen_hu`` 80, or more than ``contrast_vessel_fraction`` 0.5 % of the liver
      interior above ``contrast_vessel_hu`` 150 after light smoothing (opacified vessels).
    """

    grid: str = "native"
    model_spacing_mm: tuple[float, float, float] = PAPER_SPACING_MM
    largest_component: bool = True
    erosion_mm: float = 3.0
    steatosis_threshold_hu: float = STEATOSIS_THRESHOLD_HU
    ls_ratio_threshold: float = 1.0
    roi_offset_mm: float = 21.0
    roi_area_mm2: float = 200.0
    roi_slice_offset_mm: float = 5.0
    pdff_slope: float = -0.58
    pdff_intercept: float = 38.2
    pdff_source: str = "roi"
    grade_cutoffs_pct: tuple[float, float, float] = (5.0, 15.0, 25.0)
    liver_volume_range_ml: tuple[float, float] = (500.0, 4000.0)
    fov_rim_px: float = 2.5
    contrast_liver_hu: float = 90.0
    contrast_spleen_hu: float = 80.0
    contrast_vessel_hu: float = 150.0
    contrast_vessel_fraction: float = 0.005

    def __post_init__(self) -> None:
        require(self.grid in MEASURE_GRIDS, f"grid {self.grid!r} must be one of {MEASURE_GRIDS}")
        require(
            self.pdff_source in PDFF_SOURCES,
            f"pdff_source {self.pdff_source!r} must be one of {PDFF_SOURCES}",
        )
        require(min(self.model_spacing_mm) > 0, "model_spacing_mm must be positive")
        require(self.erosion_mm >= 0, f"erosion_mm {self.erosion_mm} must be >= 0")
        require(self.roi_area_mm2 > 0, f"roi_area_mm2 {self.roi_area_mm2} must be positive")
        require(self.roi_offset_mm >= 0, f"roi_offset_mm {self.roi_offset_mm} must be >= 0")
        require(
            self.roi_slice_offset_mm > 0,
            f"roi_slice_offset_mm {self.roi_slice_offset_mm} must be positive",
        )
        mild, moderate, severe = self.grade_cutoffs_pct
        require(
            0 <= mild < moderate < severe <= 100,
            f"grade_cutoffs_pct {self.grade_cutoffs_pct} must rise within [0, 100]",
        )
        lo, hi = self.liver_volume_range_ml
        require(0 <= lo < hi, f"liver_volume_range_ml {self.liver_volume_range_ml} must rise")
        require(self.fov_rim_px >= 0, "fov_rim_px must be >= 0")
        require(
            0 < self.contrast_vessel_fraction < 1,
            "contrast_vessel_fraction must be in (0, 1)",
        )

    @property
    def roi_radius_mm(self) -> float:
        """Radius of a circle of ``roi_area_mm2`` (200 mm² → 7.98 mm)."""
        import math

        return math.sqrt(self.roi_area_mm2 / math.pi)
