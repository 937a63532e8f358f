"""Liver attenuation (AI-3D, AI-2D, AI-ROI), spleen, classification, QC flags and overlays.

Pure functions on ``(ct_hu, labels, spacing_mm)`` (:func:`measure_volume`) and thin wrappers
that read a scan store (:func:`measure_store`, :func:`measure_stores`).
"""

from screening.measure.classify import pdff_from_hu, steatosis_grade
from screening.measure.config import MeasureConfig
from screening.measure.overlay import render_overlay, write_overlay
from screening.measure.store import (
    SEGMENTATION_ARRAYS,
    MeasureSummary,
    measure_pipeline_id,
    measure_store,
    measure_stores,
)
from screening.measure.volume import Measurement, measure_volume, to_model_grid

__all__ = [
    "SEGMENTATION_ARRAYS",
    "MeasureConfig",
    "MeasureSummary",
    "Measurement",
    "measure_pipeline_id",
    "measure_store",
    "measure_stores",
    "measure_volume",
    "pdff_from_hu",
    "render_overlay",
    "steatosis_grade",
    "to_model_grid",
    "write_overlay",
]
