"""QC overlay: one PNG per scan that shows each decision to a reviewing radiologist.

Left: the AI-2D axial slice (radiological display: patient's right on the image left) with the
liver (green) and spleen (blue) outlines and the three AI-ROI circles (yellow: this slice;
orange: the slices ``roi_slice_offset_mm`` below and above, drawn where they were placed).
Right: a coronal view through the centre ROI's row (head up) with the ROI slice levels marked.
Below: the values, the decisions and the QC flags. Drawn with Pillow at physical aspect
ratio; no patient identifier appears (the caption names the scan by its pseudonymous id).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screening.constants import STEATOSIS_THRESHOLD_HU
from screening.location import Location, Where
from screening.masks import OrganMask, outline_2d
from screening.measure.volume import Measurement

__all__ = ["OVERLAY_WINDOW_HU", "render_overlay", "write_overlay"]

#: Soft-tissue display window (HU): liver, spleen and fat all readable.
OVERLAY_WINDOW_HU = (-160.0, 240.0)
_LIVER_RGB = (40, 230, 40)
_SPLEEN_RGB = (70, 150, 255)
_ROI_RGB = (255, 225, 0)
_ROI_NEAR_RGB = (255, 140, 0)
_PANEL_PX = 480


def _gray(plane: NDArray[Any], window_hu: Sequence[float]) -> NDArray[np.uint8]:
    lo, hi = window_hu
    scaled = (np.asarray(plane, dtype=np.float32) - lo) * (255.0 / (hi - lo))
    out: NDArray[np.uint8] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


def _axial_mask(organ: OrganMask | None, k: int, shape_yx: tuple[int, int]) -> NDArray[np.bool_]:
    out = np.zeros(shape_yx, dtype=bool)
    if organ is not None:
        local = k - organ.box[0].start
        if 0 <= local < organ.mask.shape[0]:
            out[organ.box[1], organ.box[2]] = organ.mask[local]
    return out


def _coronal_mask(
    organ: OrganMask | None, row: int, shape_zx: tuple[int, int]
) -> NDArray[np.bool_]:
    out = np.zeros(shape_zx, dtype=bool)
    if organ is not None:
        local = row - organ.box[1].start
        if 0 <= local < organ.mask.shape[1]:
            out[organ.box[0], organ.box[2]] = organ.mask[:, local, :]
    return out


def _panel(
    plane: NDArray[Any],
    masks: Sequence[tuple[NDArray[np.bool_], tuple[int, int, int]]],
    size_px: tuple[int, int],
    window_hu: Sequence[float],
) -> Any:
    """Grey image resized to ``size_px`` (w, h) with 1-pixel outlines of ``masks``."""
    from PIL import Image

    w, h = size_px
    img = Image.fromarray(_gray(plane, window_hu)).resize((w, h), Image.Resampling.BILINEAR)
    rgb = np.repeat(np.asarray(img)[..., None], 3, axis=2)
    for mask, colour in masks:
        if not mask.any():
            continue
        big = Image.fromarray(mask.view(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST)
        rgb[outline_2d(np.asarray(big) > 0)] = colour
    return Image.fromarray(rgb)


def _fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def _yes_no(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def _caption(m: Measurement, head: str, threshold_hu: float) -> list[str]:
    rois = "/".join(_fmt(v) for v in (m.roi_hu or ()))
    lines = [
        head
        + f"  |  grid {m.grid}  |  status {m.status.value}"
        + (f" ({m.reason.value})" if m.reason else ""),
        f"AI-3D {_fmt(m.liver_hu_3d)} HU   AI-2D {_fmt(m.liver_hu_2d)} HU "
        f"(slice {m.liver_2d_slice_index})   AI-ROI {_fmt(m.liver_hu_roi)} HU ({rois})"
        + ("  [ROI moved]" if m.roi_moved else ""),
        f"steatosis (<= {threshold_hu:g} HU)  3D {_yes_no(m.steatosis_3d)}  "
        f"2D {_yes_no(m.steatosis_2d)}  ROI {_yes_no(m.steatosis_roi)}  L/S<1 "
        f"{_yes_no(m.steatosis_ls)}   PDFF ~ {_fmt(m.pdff_est_pct, 1, ' %')}   "
        f"grade {m.steatosis_grade or 'n/a'}",
        f"liver {_fmt(m.liver_volume_ml, 0, ' ml')}  eroded {_fmt(m.liver_hu_3d_eroded)} HU   "
        f"spleen {_fmt(m.spleen_hu_3d)} HU, {_fmt(m.spleen_volume_ml, 0, ' ml')}   "
        f"L/S {_fmt(m.liver_spleen_ratio, 2)}   L-S {_fmt(m.liver_minus_spleen_hu)} HU",
        "QC: " + (", ".join(m.qc_flags) if m.qc_flags else "no flags"),
    ]
    if m.message:
        lines.append(m.message)
    return lines


def render_overlay(
    ct_hu: NDArray[Any],
    m: Measurement,
    *,
    head: str = "",
    threshold_hu: float = STEATOSIS_THRESHOLD_HU,
    window_hu: Sequence[float] = OVERLAY_WINDOW_HU,
) -> bytes:
    """PNG bytes of the QC overlay for ``m`` measured on ``ct_hu`` (same grid)."""
    from PIL import Image, ImageDraw, ImageFont

    detail = m.detail
    if detail is None:
        raise ValueError("the measurement carries no geometry (detail is None)")
    nz, ny, nx = detail.shape
    sz, sy, sx = detail.spacing_mm
    scale = _PANEL_PX / max(ny * sy, nx * sx, nz * sz)  # display px per mm
    k = m.liver_2d_slice_index if m.liver_2d_slice_index is not None else nz // 2
    centre = detail.rois[1] if detail.rois else None
    if centre is not None and centre.centre_row is not None:
        row = centre.centre_row
    elif detail.liver is not None:
        row = int((detail.liver.box[1].start + detail.liver.box[1].stop) // 2)
    else:
        row = ny // 2

    axial_size = (max(1, round(nx * sx * scale)), max(1, round(ny * sy * scale)))
    axial = _panel(
        ct_hu[k],
        [
            (_axial_mask(detail.liver, k, (ny, nx)), _LIVER_RGB),
            (_axial_mask(detail.spleen, k, (ny, nx)), _SPLEEN_RGB),
        ],
        axial_size,
        window_hu,
    )
    draw = ImageDraw.Draw(axial)
    for roi in sorted(detail.rois, key=lambda r: r.level == "centre"):  # centre drawn last
        if roi.centre_row is None or roi.centre_col is None or not roi.ok:
            continue
        cx, cy = (roi.centre_col + 0.5) * sx * scale, (roi.centre_row + 0.5) * sy * scale
        r = roi.radius_mm * scale
        colour = _ROI_RGB if roi.level == "centre" else _ROI_NEAR_RGB
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=2)

    coronal_size = (max(1, round(nx * sx * scale)), max(1, round(nz * sz * scale)))
    coronal = _panel(
        ct_hu[:, row, :][::-1],
        [
            (_coronal_mask(detail.liver, row, (nz, nx))[::-1], _LIVER_RGB),
            (_coronal_mask(detail.spleen, row, (nz, nx))[::-1], _SPLEEN_RGB),
        ],
        coronal_size,
        window_hu,
    )
    cdraw = ImageDraw.Draw(coronal)
    for roi in detail.rois:
        y = (nz - roi.slice_index - 0.5) * sz * scale
        colour = _ROI_RGB if roi.level == "centre" else _ROI_NEAR_RGB
        cdraw.line((0, y, coronal_size[0] * 0.12, y), fill=colour, width=2)
        cdraw.line((coronal_size[0] * 0.88, y, coronal_size[0], y), fill=colour, width=2)

    font = ImageFont.load_default(size=14)
    lines = _caption(m, head, threshold_hu)
    line_h = 18
    gap = 8
    width = axial_size[0] + gap + coronal_size[0]
    height = max(axial_size[1], coronal_size[1]) + gap + line_h * len(lines) + gap
    canvas = Image.new("RGB", (max(width, 760), height), (0, 0, 0))
    canvas.paste(axial, (0, 0))
    canvas.paste(coronal, (axial_size[0] + gap, 0))
    text = ImageDraw.Draw(canvas)
    y0 = max(axial_size[1], coronal_size[1]) + gap
    for i, line in enumerate(lines):
        text.text((6, y0 + i * line_h), line, fill=(235, 235, 235), font=font)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_overlay(path: Where, png: bytes) -> None:
    """Write PNG bytes atomically (a reader never sees half an image), locally or to a bucket."""
    Location.of(path).write_bytes(png)
