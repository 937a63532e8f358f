"""Pure functions: HU conversion, canonical axes, slice-stack validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.errors import ValidationError
from screening.ingest.validate import ValidationConfig, validate_stack
from screening.ingest.volume import (
    HU_MAX,
    HU_MIN,
    canonical_axes,
    hu_int16_in_place,
    to_hu_int16,
)
from screening.reasons import ReasonCode

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CFG = ValidationConfig(min_slices=4)


def test_hu_no_wraparound_and_padding_is_air() -> None:
    stored = np.array([[0, 1024, 30000, 65535]], dtype=np.uint16)
    hu = to_hu_int16(stored, 1.0, -1024.0)
    assert hu.tolist() == [[-1024, 0, 28976, HU_MAX]]
    signed = np.array([[-2000, -1024, 0, 3071]], dtype=np.int16)
    padding = signed == -2000
    assert to_hu_int16(signed, 1.0, 0.0, padding).tolist() == [[HU_MIN, -1024, 0, 3071]]
    # slope 2 on int16 would overflow in integer arithmetic: float first
    assert to_hu_int16(np.array([[30000]], np.int16), 2.0, -1024.0).tolist() == [[HU_MAX]]
    assert to_hu_int16(np.array([[7]], np.int16), 0.5, 0.0).tolist() == [[4]]  # 3.5 rounds even


@given(
    st.permutations([0, 1, 2]),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_canonical_axes_recovers_any_axis_permutation(perm: list[int], signs: list[bool]) -> None:
    # source axis a runs along LPS component perm[a] with sign signs[a]
    dirs = np.zeros((3, 3))
    for a in range(3):
        dirs[a, perm[a]] = -1.0 if signs[a] else 1.0
    ax = canonical_axes(dirs)
    for c in range(3):
        src = ax.perm[c]
        assert perm[src] == 2 - c
        assert ax.flip[c] == signs[src]
    assert ax.obliquity_deg == pytest.approx(0.0)


def _stack(z: list[float], iop: tuple[float, ...] = AXIAL, drift_y: float = 0.0) -> tuple:
    positions = [(0.0, drift_y * i, zi) for i, zi in enumerate(z)]
    names = [f"f{i}.dcm" for i in range(len(z))]
    return [iop] * len(z), positions, names


@settings(max_examples=30)
@given(st.permutations(list(range(12))), st.sampled_from([0.5, 1.25, 2.5, 5.0]))
def test_any_file_order_gives_the_superior_order(order: list[int], step: float) -> None:
    z = [-100.0 + step * i for i in order]
    stack = validate_stack(*_stack(z), CFG)
    assert [z[i] for i in stack.order] == sorted(z)
    assert stack.step_mm == pytest.approx(step)


@pytest.mark.parametrize(
    ("z", "reason", "words"),
    [
        ([10.0] * 6, ReasonCode.NOT_A_VOLUME, "same position"),
        ([0.0, 2.0, 2.0, 4.0, 6.0], ReasonCode.DUPLICATE_POSITION, "share a position"),
        ([0.0, 2.0, 4.0, 8.0, 10.0, 12.0], ReasonCode.SLICE_INCREMENT_INCONSISTENT, "1 missing"),
        ([0.0, 2.0, 4.0, 5.1, 7.0, 9.0], ReasonCode.SLICE_INCREMENT_INCONSISTENT, "uneven"),
        ([0.0, 2.0, 4.0], ReasonCode.TOO_FEW_SLICES, "only 3"),
    ],
)
def test_rejections_name_reason_and_files(z: list[float], reason: ReasonCode, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_stack(*_stack(z), CFG, path="series-x")
    assert err.value.reason is reason
    assert words in err.value.message
    assert "f" in err.value.message and err.value.path == "series-x"


def test_gap_names_the_files_around_it() -> None:
    with pytest.raises(ValidationError) as err:
        validate_stack(*_stack([0.0, 2.0, 4.0, 8.0, 10.0]), CFG)
    assert "f2.dcm and f3.dcm" in err.value.message


def test_gantry_tilt_is_rejected_not_silently_accepted() -> None:
    tilt = np.radians(15.0)
    iop = (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(-np.sin(tilt)))
    with pytest.raises(ValidationError) as err:
        validate_stack(*_stack([0.0, 5.0, 10.0, 15.0, 20.0], iop), CFG)
    assert err.value.reason is ReasonCode.GANTRY_TILT
    # a tiny table drift well inside tolerance is accepted
    validate_stack(*_stack([0.0, 5.0, 10.0, 15.0, 20.0], drift_y=0.01), CFG)


def test_mixed_orientations_and_non_axial() -> None:
    iops, pos, names = _stack([0.0, 2.0, 4.0, 6.0])
    iops[2] = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    with pytest.raises(ValidationError) as err:
        validate_stack(iops, pos, names, CFG)
    assert err.value.reason is ReasonCode.IMAGE_ORIENTATION_INCONSISTENT
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    positions = [(0.0, float(y), 0.0) for y in range(0, 8, 2)]
    with pytest.raises(ValidationError) as err:
        validate_stack([coronal] * 4, positions, names, CFG)
    assert err.value.reason is ReasonCode.NOT_AXIAL


def test_small_obliquity_is_accepted_within_tolerance() -> None:
    a = np.radians(3.0)
    iop = (float(np.cos(a)), float(np.sin(a)), 0.0, float(-np.sin(a)), float(np.cos(a)), 0.0)
    stack = validate_stack(*_stack([0.0, 2.0, 4.0, 6.0], iop), CFG)
    assert stack.axes.obliquity_deg == pytest.approx(3.0, abs=0.01)
    with pytest.raises(ValidationError):
        validate_stack(
            *_stack([0.0, 2.0, 4.0, 6.0], iop),
            ValidationConfig(min_slices=4, axial_tolerance_deg=2.0),
        )


@settings(max_examples=60)
@given(
    st.sampled_from([np.uint16, np.int16]),
    st.integers(-3000, 3000),
    st.lists(st.integers(0, 65535), min_size=1, max_size=50),
)
def test_integer_hu_path_equals_float_reference(
    dtype: type, intercept: int, raw: list[int]
) -> None:
    stored = np.array(raw, dtype=np.uint16).view(dtype)
    expected = np.clip(stored.astype(np.float64) + intercept, HU_MIN, HU_MAX).astype(np.int16)
    padding = stored == stored[0]
    expected_padded = np.where(padding, HU_MIN, expected).astype(np.int16)
    np.testing.assert_array_equal(to_hu_int16(stored, 1.0, float(intercept)), expected)
    np.testing.assert_array_equal(to_hu_int16(stored, 1.0, intercept, padding), expected_padded)
    in_place = stored.copy()  # the reader's path: converted in the output slice's memory
    hu_int16_in_place(in_place, intercept, padding)
    np.testing.assert_array_equal(in_place.view(np.int16), expected_padded)
