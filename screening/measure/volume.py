"""Measure one scan: :func:`measure_volume` on (ct_hu, labels, spacing_mm) → :class:`Measurement`.

The result's :meth:`Measurement.row` holds the ``measurements`` columns this stage owns; the
store wrapper adds identity, timing and provenance. No value is ever a silent NaN: a value that
cannot be computed is None and the reason is in ``reason`` / ``qc_flags`` / ``message``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screening.constants import LIVER_LABEL, SPLEEN_LABEL
from screening.masks import OrganMask, erode_mm, organ_mask
from screening.measure.attenuation import (
    OrganStats,
    largest_section_slice,
    organ_stats,
    slice_mean_hu,
)
from screening.measure.classify import pdff_from_hu, steatosis_grade
from screening.measure.config import MeasureConfig
from screening.measure.qc import (
    body_centre_col,
    contrast_evidence,
    liver_truncated,
    opacified_fraction,
    orientation_suspect,
    volume_implausible,
)
from screening.measure.roi import RoiResult, measure_rois
from screening.reasons import ReasonCode, Status

__all__ = ["Measurement", "measure_volume", "to_model_grid"]


@dataclass(frozen=True, eq=False)
class MeasureDetail:
    """Geometry behind the numbers, for the overlay (not written to Parquet)."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    liver: OrganMask | None
    spleen: OrganMask | None
    rois: tuple[RoiResult, ...] = ()


@dataclass(frozen=True, eq=False)
class Measurement:
    """Everything measured on one scan. HU are on ``grid`` (native or model)."""

    status: Status
    reason: ReasonCode | None
    message: str | None
    grid: str
    liver_volume_ml: float | None = None
    liver_hu_3d: float | None = None
    liver_hu_3d_median: float | None = None
    liver_hu_3d_std: float | None = None
    liver_hu_3d_p05: float | None = None
    liver_hu_3d_p95: float | None = None
    liver_hu_3d_eroded: float | None = None
    liver_hu_3d_eroded_median: float | None = None
    liver_hu_2d: float | None = None
    liver_2d_slice_index: int | None = None
    liver_hu_roi: float | None = None
    roi_hu: tuple[float | None, ...] | None = None
    roi_moved: bool | None = None
    spleen_volume_ml: float | None = None
    spleen_hu_3d: float | None = None
    spleen_hu_3d_median: float | None = None
    liver_spleen_ratio: float | None = None
    liver_minus_spleen_hu: float | None = None
    pdff_est_pct: float | None = None
    steatosis_grade: str | None = None
    steatosis_3d: bool | None = None
    steatosis_2d: bool | None = None
    steatosis_roi: bool | None = None
    steatosis_ls: bool | None = None
    liver_truncated: bool | None = None
    contrast_suspected: bool | None = None
    qc_flags: tuple[str, ...] = ()
    detail: MeasureDetail | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        """The ``measurements`` columns owned by this stage (plain Python values)."""
        out = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k not in ("detail", "grid", "qc_flags", "roi_hu", "status", "reason")
        }
        out["status"] = self.status.value
        out["reason"] = None if self.reason is None else self.reason.value
        out["qc_flags"] = list(self.qc_flags)
        out["roi_hu"] = None if self.roi_hu is None else list(self.roi_hu)
        out["measure_grid"] = self.grid
        return out


def to_model_grid(
    ct_hu: NDArray[Any],
    labels: NDArray[np.integer[Any]],
    spacing_mm: Sequence[float],
    target_spacing_mm: Sequence[float],
) -> tuple[NDArray[np.float32], NDArray[np.integer[Any]]]:
    """CT (linear) and labels (nearest) on the model grid, as the paper measured.

    Same voxel-centre grid convention and extent as the U-Net's input (:mod:`screening.preprocess`).
    """
    from screening.preprocess import grid_shape, resample_labels_nearest, resample_linear

    shape = grid_shape(ct_hu.shape, spacing_mm, target_spacing_mm)
    step = [t / s for t, s in zip(target_spacing_mm, spacing_mm, strict=True)]
    hu = resample_linear(ct_hu, step, shape)
    return hu.astype(np.float32, copy=False), resample_labels_nearest(labels, step, shape)


def _none_if_empty(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if len(present) == len(values) and present else None


#: MeasureConfig.pdff_source → the measurement column it names.
_PDFF_SOURCE_COLUMN = {
    "roi": "liver_hu_roi",
    "3d": "liver_hu_3d",
    "3d_eroded": "liver_hu_3d_eroded",
    "2d": "liver_hu_2d",
}


def measure_volume(
    ct_hu: NDArray[Any],
    labels: NDArray[np.integer[Any]],
    spacing_mm: Sequence[float],
    cfg: MeasureConfig,
    *,
    contrast_header: bool = False,
    spleen_segmented: bool = True,
) -> Measurement:
    """Liver (AI-3D, AI-2D, AI-ROI) and spleen attenuation, classification and QC of one scan.

    Parameters
    ----------
    ct_hu : (nz, ny, nx) HU in canonical LPS order (int16 native, or float on the model grid)
    labels : (nz, ny, nx) uint8, 0 background, 1 liver, 2 spleen, same grid
    spacing_mm : (z, y, x)
    cfg
        Measurement settings. ``cfg.grid`` is recorded; resampling to the model grid is the
        caller's (:func:`to_model_grid`), so this function measures exactly what it is given.
    contrast_header
        The DICOM header records a contrast agent (``scans.contrast_header``).
    spleen_segmented
        False when the masks come from a model without a spleen class: spleen values and the
        liver/spleen ratio stay empty with SPLEEN_NOT_SEGMENTED (not NO_SPLEEN, which says the
        model looked and found none).
    """
    if ct_hu.shape != labels.shape:
        raise ValueError(f"ct shape {ct_hu.shape} and labels shape {labels.shape} differ")
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2]))
    shape = (int(ct_hu.shape[0]), int(ct_hu.shape[1]), int(ct_hu.shape[2]))
    liver = organ_mask(labels, LIVER_LABEL, largest=cfg.largest_component)
    if liver is None:
        return Measurement(
            status=Status.REJECTED,
            reason=ReasonCode.NO_LIVER,
            message="the liver mask is empty: nothing labelled 1 in the segmentation",
            grid=cfg.grid,
            qc_flags=(ReasonCode.NO_LIVER.value,),
            detail=MeasureDetail(shape, spacing, None, None),
        )
    spleen = (
        organ_mask(labels, SPLEEN_LABEL, largest=cfg.largest_component)
        if spleen_segmented
        else None
    )
    flags: list[ReasonCode] = []
    notes: list[str] = []

    liver_interior = erode_mm(liver.mask, cfg.erosion_mm, spacing)
    ls = organ_stats(ct_hu, liver, spacing, liver_interior)
    spleen_stats: OrganStats | None = None
    if spleen is not None:
        ss = organ_stats(ct_hu, spleen, spacing, erode_mm(spleen.mask, cfg.erosion_mm, spacing))
        spleen_stats = ss
    else:
        flags.append(ReasonCode.NO_SPLEEN if spleen_segmented else ReasonCode.SPLEEN_NOT_SEGMENTED)
    if ls.n_voxels_eroded == 0 or (spleen_stats is not None and spleen_stats.n_voxels_eroded == 0):
        flags.append(ReasonCode.ERODED_EMPTY)
        notes.append(f"a mask is empty after {cfg.erosion_mm} mm erosion")

    k2d = largest_section_slice(liver)
    rois = measure_rois(
        ct_hu,
        liver,
        spacing,
        k2d,
        offset_mm=cfg.roi_offset_mm,
        radius_mm=cfg.roi_radius_mm,
        slice_offset_mm=cfg.roi_slice_offset_mm,
    )
    roi_hu = tuple(r.mean_hu for r in rois)
    liver_hu_roi = _none_if_empty(roi_hu)
    roi_moved = any(r.status == "moved" or r.slice_shifted for r in rois)
    if roi_moved:
        flags.append(ReasonCode.ROI_MOVED)
        notes.extend(
            f"{r.level} ROI slice outside the liver: used slice {r.slice_index} instead"
            for r in rois
            if r.slice_shifted
        )
    if liver_hu_roi is None:
        flags.append(ReasonCode.ROI_NOT_PLACED)
        notes.append(
            "AI-ROI not measured: " + ", ".join(f"{r.level} {r.status}" for r in rois if not r.ok)
        )

    truncated = liver_truncated(liver, shape, cfg.fov_rim_px)
    if truncated:
        flags.append(ReasonCode.LIVER_TRUNCATED)
    if volume_implausible(ls, truncated, cfg):
        flags.append(ReasonCode.LIVER_VOLUME_IMPLAUSIBLE)
        notes.append(f"liver volume {ls.volume_ml:.0f} ml outside {cfg.liver_volume_range_ml} ml")
    body_col = body_centre_col(ct_hu, liver.box[0])
    if orientation_suspect(ls, spleen_stats, body_col):
        flags.append(ReasonCode.ORIENTATION_SUSPECT)
        notes.append("liver not on the patient's right of the body centre / spleen")

    vessels = opacified_fraction(ct_hu, liver, liver_interior, cfg.contrast_vessel_hu)
    evidence = contrast_evidence(ls, spleen_stats, vessels, cfg)
    if contrast_header:
        flags.append(ReasonCode.CONTRAST_HEADER)
    if evidence:
        flags.append(ReasonCode.CONTRAST_IMAGE)
        notes.append("contrast evidence: " + ", ".join(evidence))
    contrast = contrast_header or bool(evidence)

    spleen_hu = spleen_stats.mean_hu_eroded if spleen_stats else None
    liver_eroded = ls.mean_hu_eroded
    ratio = diff = None
    if spleen_hu is not None and liver_eroded is not None:
        diff = liver_eroded - spleen_hu
        ratio = liver_eroded / spleen_hu if spleen_hu > 0 else None

    values: dict[str, Any] = {
        "liver_volume_ml": ls.volume_ml,
        "liver_hu_3d": ls.mean_hu,
        "liver_hu_3d_median": ls.median_hu,
        "liver_hu_3d_std": ls.std_hu,
        "liver_hu_3d_p05": ls.p05_hu,
        "liver_hu_3d_p95": ls.p95_hu,
        "liver_hu_3d_eroded": liver_eroded,
        "liver_hu_3d_eroded_median": ls.median_hu_eroded,
        "liver_hu_2d": slice_mean_hu(ct_hu, liver, k2d),
        "liver_2d_slice_index": k2d,
        "liver_hu_roi": liver_hu_roi,
        "roi_hu": roi_hu,
        "roi_moved": roi_moved,
        "spleen_volume_ml": spleen_stats.volume_ml if spleen_stats else None,
        "spleen_hu_3d": spleen_hu,
        "spleen_hu_3d_median": spleen_stats.median_hu_eroded if spleen_stats else None,
        "liver_spleen_ratio": ratio,
        "liver_minus_spleen_hu": diff,
        "liver_truncated": truncated,
        "contrast_suspected": contrast,
    }
    if not contrast:
        t = cfg.steatosis_threshold_hu

        def at_or_below(v: float | None) -> bool | None:
            return None if v is None else bool(v <= t)

        values["steatosis_3d"] = at_or_below(values["liver_hu_3d"])
        values["steatosis_2d"] = at_or_below(values["liver_hu_2d"])
        values["steatosis_roi"] = at_or_below(liver_hu_roi)
        values["steatosis_ls"] = None if ratio is None else bool(ratio < cfg.ls_ratio_threshold)
        hu_for_pdff = values[_PDFF_SOURCE_COLUMN[cfg.pdff_source]]
        if hu_for_pdff is not None:
            pdff = pdff_from_hu(hu_for_pdff, cfg.pdff_slope, cfg.pdff_intercept)
            values["pdff_est_pct"] = pdff
            values["steatosis_grade"] = steatosis_grade(pdff, cfg.grade_cutoffs_pct).value

    reason: ReasonCode | None = None
    for candidate in (ReasonCode.CONTRAST_HEADER, ReasonCode.CONTRAST_IMAGE):
        if candidate in flags:
            reason = candidate
            break
    if reason is None and liver_hu_roi is None:
        reason = ReasonCode.ROI_NOT_PLACED
    if reason is None and (liver_eroded is None or (spleen is not None and spleen_hu is None)):
        reason = ReasonCode.ERODED_EMPTY
    if contrast:
        notes.insert(0, "contrast: steatosis flags, PDFF and grade withheld")
    return Measurement(
        status=Status.OK,
        reason=reason,
        message="; ".join(notes) or None,
        grid=cfg.grid,
        qc_flags=tuple(f.value for f in flags),
        detail=MeasureDetail(shape, spacing, liver, spleen, rois),
        **values,
    )
