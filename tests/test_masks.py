"""Mask geometry: bounding boxes, largest component, erosion in mm, outlines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from screening.masks import bounding_box, erode_mm, largest_component, organ_mask, outline_2d

masks_3d = arrays(bool, st.tuples(*[st.integers(1, 9)] * 3), elements=st.booleans())


@given(masks_3d)
def test_bounding_box_is_tight(mask):
    box = bounding_box(mask)
    if not mask.any():
        assert box is None
        return
    assert box is not None
    assert mask[box].sum() == mask.sum()
    for axis in range(3):  # every face of the box touches the mask
        sub = np.moveaxis(mask[box], axis, 0)
        assert sub[0].any() and sub[-1].any()


@given(masks_3d)
def test_largest_component_matches_scipy_sizes(mask):
    kept, n = largest_component(mask)
    comp, n_ref = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert n == n_ref
    if n == 0:
        assert not kept.any()
        return
    sizes = np.bincount(comp.ravel())[1:]
    assert kept.sum() == sizes.max()
    assert len(np.unique(comp[kept])) == 1  # one component


def test_corner_touching_voxels_are_one_component():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True
    assert largest_component(mask)[1] == 1


def test_organ_mask_keeps_largest_and_shrinks_its_box():
    labels = np.zeros((10, 10, 10), dtype=np.uint8)
    labels[1:4, 1:4, 1:4] = 1  # 27 voxels
    labels[7, 7, 7] = 1  # a stray voxel far away
    labels[5:7, 0:2, 8:10] = 2
    liver = organ_mask(labels, 1)
    assert liver is not None
    assert liver.n_components == 2 and liver.n_voxels == 27
    assert liver.box == (slice(1, 4), slice(1, 4), slice(1, 4))
    assert organ_mask(labels, 1, largest=False).n_voxels == 28
    expected = np.zeros(labels.shape, dtype=bool)
    expected[1:4, 1:4, 1:4] = True
    np.testing.assert_array_equal(liver.full(labels.shape), expected)
    assert organ_mask(labels, 3) is None


@given(
    arrays(bool, st.tuples(*[st.integers(3, 12)] * 3), elements=st.booleans()),
    st.floats(0.5, 6.0),
    st.tuples(*[st.sampled_from([0.7, 1.0, 2.5, 3.0, 5.0])] * 3),
)
def test_erode_mm_equals_scipy_with_a_cuboid(mask, radius_mm, spacing):
    half = [round(radius_mm / s) for s in spacing]
    structure = np.ones([2 * h + 1 for h in half], dtype=bool)
    expected = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    np.testing.assert_array_equal(erode_mm(mask, radius_mm, spacing), expected)


def test_erosion_radius_is_in_millimetres():
    mask = np.ones((9, 9, 9), dtype=bool)
    mask = np.pad(mask, 3)
    eroded = erode_mm(mask, 2.0, (2.0, 1.0, 1.0))  # 1 voxel in z, 2 in y and x
    box = bounding_box(eroded)
    assert [s.stop - s.start for s in box] == [7, 5, 5]


def test_outline_is_the_inner_boundary():
    mask = np.zeros((7, 7), dtype=bool)
    mask[1:6, 1:6] = True
    edge = outline_2d(mask)
    assert edge.sum() == 16 and not edge[3, 3] and edge[1, 3]
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(edge, mask)
