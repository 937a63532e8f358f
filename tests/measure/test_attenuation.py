"""AI-3D statistics and the AI-2D slice against direct computations on analytic phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from screening.masks import erode_mm, organ_mask
from screening.measure.attenuation import (
    _summary,
    largest_section_slice,
    organ_stats,
    slice_mean_hu,
)
from screening.measure.classify import pdff_from_hu, steatosis_grade


@given(arrays(np.int16, st.integers(1, 400), elements=st.integers(-1024, 3000)))
def test_histogram_summary_equals_numpy(values):
    mean, std, p05, p50, p95 = _summary(values)
    assert mean == pytest.approx(values.astype(float).mean(), abs=1e-9)
    assert std == pytest.approx(values.astype(float).std(), abs=1e-7)
    expected = np.percentile(values.astype(float), [5, 50, 95])
    np.testing.assert_allclose([p05, p50, p95], expected, atol=1e-9)


def test_float_values_take_the_numpy_path():
    values = np.array([1.5, 2.5, 10.0], dtype=np.float32)
    assert _summary(values)[3] == pytest.approx(2.5)


def _box_liver(shape=(12, 20, 20), lo=(2, 4, 4), hi=(10, 16, 16)):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    return labels


def test_organ_stats_on_a_checkerboard_liver_with_known_values():
    """Liver voxels alternate 30 / 50 HU: mean 40, median 40, std 10, p05 30, p95 50 exactly;
    the eroded core (1 voxel) has the same balance, so its mean is 40 too."""
    labels = _box_liver()
    z, y, x = np.indices(labels.shape)
    ct = np.where((z + y + x) % 2 == 0, 30, 50).astype(np.int16)
    ct[labels == 0] = -1000
    liver = organ_mask(labels, 1)
    eroded = erode_mm(liver.mask, 1.0, (1.0, 1.0, 1.0))
    stats = organ_stats(ct, liver, (1.0, 1.0, 1.0), eroded)
    assert stats.n_voxels == 8 * 12 * 12
    assert stats.volume_ml == pytest.approx(8 * 12 * 12 / 1000)
    assert (stats.mean_hu, stats.median_hu, stats.std_hu) == (40.0, 40.0, 10.0)
    assert (stats.p05_hu, stats.p95_hu) == (30.0, 50.0)
    assert stats.n_voxels_eroded == 6 * 10 * 10
    assert stats.mean_hu_eroded == 40.0
    assert stats.centroid_zyx == pytest.approx((5.5, 9.5, 9.5))


def test_volume_uses_anisotropic_spacing():
    labels = _box_liver()
    liver = organ_mask(labels, 1)
    ct = np.zeros(labels.shape, dtype=np.int16)
    stats = organ_stats(ct, liver, (2.5, 0.7, 0.8), liver.mask)
    assert stats.volume_ml == pytest.approx(8 * 12 * 12 * 2.5 * 0.7 * 0.8 / 1000)


def test_eroded_values_are_none_when_erosion_empties_the_mask():
    labels = _box_liver(lo=(2, 4, 4), hi=(4, 6, 6))  # 2 voxels thick
    liver = organ_mask(labels, 1)
    eroded = erode_mm(liver.mask, 1.0, (1.0, 1.0, 1.0))
    stats = organ_stats(np.zeros(labels.shape, np.int16), liver, (1, 1, 1), eroded)
    assert stats.n_voxels_eroded == 0 and stats.mean_hu_eroded is None
    assert stats.median_hu_eroded is None


def test_ai_2d_slice_is_the_largest_section_and_its_mean():
    """A cone-like liver: the section grows to slice 6 then shrinks; every slice k holds
    HU = 10 * k, so AI-2D must be 60 HU on slice 6."""
    labels = np.zeros((10, 30, 30), dtype=np.uint8)
    for k, r in enumerate([2, 4, 6, 8, 10, 11, 12, 9, 5, 2]):
        labels[k, 15 - r : 15 + r, 15 - r : 15 + r] = 1
    ct = (np.arange(10)[:, None, None] * 10 + np.zeros((10, 30, 30))).astype(np.int16)
    liver = organ_mask(labels, 1)
    k = largest_section_slice(liver)
    assert k == 6
    assert slice_mean_hu(ct, liver, k) == 60.0


def test_ai_2d_tie_goes_to_the_slice_nearest_the_centroid_then_inferior():
    labels = np.zeros((9, 10, 10), dtype=np.uint8)
    labels[1, 2:8, 2:8] = 1  # 36 px, far from the centroid
    labels[2:8, 3:7, 3:7] = 1  # 16 px slab
    labels[6, 2:8, 2:8] = 1  # 36 px, near the centroid
    assert largest_section_slice(organ_mask(labels, 1)) == 6
    sym = np.zeros((9, 10, 10), dtype=np.uint8)
    sym[2, 2:8, 2:8] = sym[6, 2:8, 2:8] = 1
    sym[3:6, 4:6, 4:6] = 1  # symmetric about z = 4: equal distances
    assert largest_section_slice(organ_mask(sym, 1)) == 2


@pytest.mark.parametrize(
    ("hu", "pdff", "grade"),
    [(60.0, 3.4, "none"), (57.0, 5.14, "mild"), (40.0, 15.0, "moderate"), (20.0, 26.6, "severe")],
)
def test_pdff_and_grade(hu, pdff, grade):
    assert pdff_from_hu(hu) == pytest.approx(pdff, abs=1e-9)
    assert steatosis_grade(pdff_from_hu(hu)).value == grade


def test_pdff_is_clipped_and_cutoffs_are_configurable():
    assert pdff_from_hu(100.0) == 0.0 and pdff_from_hu(-200.0) == 100.0
    assert steatosis_grade(6.0, (7.0, 15.0, 25.0)).value == "none"
    assert steatosis_grade(25.0).value == "severe"  # a cut-off value belongs to the grade above
