"""AI-ROI geometry on disk- and band-shaped livers, in millimetres on any spacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from screening.masks import organ_mask
from screening.measure.roi import disk_footprint, measure_rois, place_roi

RADIUS_MM = math.sqrt(200.0 / math.pi)  # 2.0 cm²


def _disk(ny: int, nx: int, spacing: float, centre_mm: tuple[float, float], r_mm: float):
    yy, xx = np.indices((ny, nx)) * spacing
    return (yy - centre_mm[0]) ** 2 + (xx - centre_mm[1]) ** 2 <= r_mm**2


@given(st.sampled_from([0.5, 0.7, 0.8, 1.0]), st.floats(0.0, 0.99))
def test_footprint_is_the_pixels_within_the_radius(spacing, frac):
    dy, lo, hi = disk_footprint(RADIUS_MM, (spacing, spacing), frac)
    inside = {(int(r), int(c)) for r, a, b in zip(dy, lo, hi, strict=True) for c in range(a, b + 1)}
    n = int(RADIUS_MM / spacing) + 2
    brute = {
        (r, c)
        for r in range(-n, n + 1)
        for c in range(-n, n + 2)
        if (r * spacing) ** 2 + ((c - frac) * spacing) ** 2 <= RADIUS_MM**2 + 1e-9
    }
    assert inside == brute
    # pixel area approximates 2.0 cm² (within the discretisation at this pixel size)
    assert len(inside) * spacing**2 == pytest.approx(200.0, rel=0.12)


@pytest.mark.parametrize("spacing", [0.7, 0.8, 1.0, 0.5])
def test_roi_centre_is_21_mm_medial_of_the_lateral_most_pixel(spacing):
    """Disk liver (radius 60 mm): lateral-most pixel on the centre row; the ROI centre lies
    21 mm to its right (toward the patient's left) on that row, at any pixel size."""
    n = int(160 / spacing)
    plane = _disk(n, n, spacing, (80.0, 80.0), 60.0)
    status, row, col, moved, rows, cols = place_roi(
        plane, (spacing, spacing), offset_mm=21.0, radius_mm=RADIUS_MM
    )
    lateral = np.flatnonzero(plane.any(axis=0))[0]
    assert status == "placed" and moved == 0.0
    assert row * spacing == pytest.approx(80.0, abs=spacing)
    assert (col - lateral) * spacing == pytest.approx(21.0, abs=1e-9)
    assert plane[rows, cols].all()
    assert rows.size * spacing**2 == pytest.approx(200.0, rel=0.12)


def test_paper_grid_offset_is_30_pixels():
    plane = _disk(200, 200, 0.7, (70.0, 70.0), 50.0)
    _, _, col, _, _, _ = place_roi(plane, (0.7, 0.7), offset_mm=21.0, radius_mm=RADIUS_MM)
    assert col - np.flatnonzero(plane.any(axis=0))[0] == pytest.approx(30.0)


def test_roi_mean_of_a_linear_ramp_is_the_value_at_its_centre():
    """HU = 2 × column: a disk symmetric about a pixel centre averages to the centre's value."""
    plane = _disk(200, 200, 0.7, (70.0, 70.0), 50.0)
    labels = np.zeros((3, 200, 200), dtype=np.uint8)
    labels[:] = plane
    ct = np.broadcast_to(2 * np.arange(200, dtype=np.int16), (3, 200, 200)).copy()
    rois = measure_rois(
        ct, organ_mask(labels, 1), (5.0, 0.7, 0.7), 1,
        offset_mm=21.0, radius_mm=RADIUS_MM, slice_offset_mm=5.0,
    )  # fmt: skip
    for roi in rois:
        assert roi.ok
        assert roi.mean_hu == pytest.approx(2 * roi.centre_col)
    assert [r.slice_index for r in rois] == [0, 1, 2]


def test_roi_that_pokes_out_moves_inward_along_its_row():
    """A 12 mm-tall tongue of liver reaches far laterally: a 16 mm disk cannot sit 21 mm in
    from its tip, so it moves medially along the row into the thick part."""
    plane = np.zeros((120, 200), dtype=bool)
    plane[20:100, 80:180] = True  # thick body
    plane[56:68, 10:80] = True  # thin lateral tongue, rows 56..67
    status, row, col, moved, rows, cols = place_roi(
        plane, (1.0, 1.0), offset_mm=21.0, radius_mm=RADIUS_MM
    )
    assert status == "moved" and row == 61  # middle (lower median) row of the tongue edge
    assert plane[rows, cols].all()
    assert moved > 0  # medially
    # the nearest fitting position: one pixel less medial does not fit
    assert not plane[rows, cols - 1].all()
    assert moved == pytest.approx(col - (10 + 21.0))
    # no position fits when the whole liver is thinner than the disk
    band = np.zeros((50, 200), dtype=bool)
    band[20:30, 10:190] = True
    assert place_roi(band, (1.0, 1.0), offset_mm=21.0, radius_mm=RADIUS_MM)[0] == "no_fit"


def test_neighbour_slices_are_5_mm_away_and_shift_inside_a_cut_liver():
    """Spacing 2.5 mm: neighbours are 2 slices away. The liver's largest section is the first
    slice (cut off by the field of view), so the inferior ROI goes 10 mm above instead."""
    plane = _disk(120, 120, 1.0, (60.0, 60.0), 50.0)
    labels = np.zeros((8, 120, 120), dtype=np.uint8)
    labels[:] = plane
    ct = (np.arange(8)[:, None, None] * 10 + np.zeros((8, 120, 120))).astype(np.int16)
    liver = organ_mask(labels, 1)
    kw = {"offset_mm": 21.0, "radius_mm": RADIUS_MM, "slice_offset_mm": 5.0}
    mid = measure_rois(ct, liver, (2.5, 1.0, 1.0), 4, **kw)
    assert [r.slice_index for r in mid] == [2, 4, 6]
    assert [r.mean_hu for r in mid] == [20.0, 40.0, 60.0]
    edge = measure_rois(ct, liver, (2.5, 1.0, 1.0), 0, **kw)
    assert [r.slice_index for r in edge] == [4, 0, 2]
    assert edge[0].slice_shifted and not edge[1].slice_shifted
    # 5 mm slices: one slice away; 10 mm slices: still one (never the centre twice)
    assert [r.slice_index for r in measure_rois(ct, liver, (5.0, 1, 1), 4, **kw)] == [3, 4, 5]
    assert [r.slice_index for r in measure_rois(ct, liver, (10.0, 1, 1), 4, **kw)] == [3, 4, 5]


def test_a_liver_only_on_one_slice_has_no_roi_triplet():
    labels = np.zeros((5, 120, 120), dtype=np.uint8)
    labels[2] = _disk(120, 120, 1.0, (60.0, 60.0), 50.0)
    ct = np.zeros(labels.shape, dtype=np.int16)
    rois = measure_rois(
        ct, organ_mask(labels, 1), (2.5, 1.0, 1.0), 2,
        offset_mm=21.0, radius_mm=RADIUS_MM, slice_offset_mm=5.0,
    )  # fmt: skip
    assert [r.status for r in rois] == ["no_liver", "placed", "no_liver"]
    assert rois[0].mean_hu is None and rois[1].mean_hu == 0.0
