"""A reference mask whose affine is rotated against the CT is refused, not silently misplaced.

Both grids are canonicalised (rotation dropped), so a mask on other axes used to land on the
wrong voxels and be stored as ``seg_reference`` with status ok. Masks on the CT's own axes, also
flipped or permuted, must keep landing on exactly the same voxels.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray

from screening.errors import ValidationError
from screening.ingest import ingest, read_manifest
from screening.ingest.masks import MASK_AXES_TOLERANCE_DEG, axes_angle_deg
from screening.ingest.nifti import read_nifti_labels
from screening.reasons import ReasonCode
from screening.runtime import ClusterConfig
from screening.store import open_scan_store, read_catalog

SHAPE_IJK = (32, 32, 20)  # x, y, z: canonical (z, y, x) = (20, 32, 32), 1 mm voxels
CT_AFFINE = np.array(
    [[1.0, 0, 0, -16.0], [0, 1.0, 0, -20.0], [0, 0, 1.0, 100.0], [0, 0, 0, 1.0]]
)  # RAS


def _rot_z(deg: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(deg: float) -> NDArray[np.float64]:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


# ------------------------------------------------------------------------ the pure function


def test_same_flipped_and_permuted_axes_are_zero_degrees() -> None:
    ct = np.eye(3)
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            mask = np.array(signs)[:, None] * ct[list(perm)] * 2.5  # any row length
            assert axes_angle_deg(mask, ct) == pytest.approx(0.0, abs=1e-6)
    oblique_ct = _rot_x(8.0)  # a CT within the axial tolerance: the mask shares its axes
    assert axes_angle_deg(oblique_ct[[2, 0, 1]] * -1.0, oblique_ct) == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("deg", [0.5, 1.5, 10.0, 30.0, 44.0])
def test_rotation_angle_is_measured(deg: float) -> None:
    ct = np.eye(3)
    assert axes_angle_deg(_rot_z(deg).T, ct) == pytest.approx(deg, abs=1e-6)
    assert axes_angle_deg(_rot_x(-deg).T, ct) == pytest.approx(deg, abs=1e-6)
    # symmetric, and measured against the CT's own (oblique) axes, not the patient's
    assert axes_angle_deg(ct, _rot_z(deg).T) == pytest.approx(deg, abs=1e-6)
    oblique_ct = _rot_x(8.0).T
    assert axes_angle_deg(_rot_z(deg).T @ oblique_ct, oblique_ct) == pytest.approx(deg, abs=1e-6)
    assert (axes_angle_deg(_rot_z(deg).T, ct) > MASK_AXES_TOLERANCE_DEG) is (deg > 1.0)


def test_bad_direction_arrays_raise() -> None:
    with pytest.raises(ValueError, match="mask_direction"):
        axes_angle_deg(np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="ct_direction"):
        axes_angle_deg(np.eye(3), [[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0]])
    with pytest.raises(ValueError, match="mask_direction"):
        axes_angle_deg(np.full((3, 3), np.nan), np.eye(3))


def test_mask_axes_matching_no_patient_axes_are_a_mask_mismatch(tmp_path: Path) -> None:
    affine = np.eye(4)
    affine[:3, 1] = [1.0, 1.0, 0.0]  # i and j both run mostly along x: no canonical axes
    path = tmp_path / "skew.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), affine), path)
    with pytest.raises(ValidationError) as err:
        read_nifti_labels(str(path), None, 10**6)
    assert err.value.reason is ReasonCode.MASK_GRID_MISMATCH
    assert err.value.path == str(path)


# ---------------------------------------------------------------- end to end through ingest


def _save(data: NDArray[Any], affine: NDArray[np.float64], path: Path) -> None:
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(data.dtype)
    nib.save(img, path)


def _ct(seed: int) -> NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return rng.normal(40.0, 10.0, SHAPE_IJK).round().astype(np.int16)  # distinct scans


def _liver() -> NDArray[np.uint8]:
    mask = np.zeros(SHAPE_IJK, np.uint8)
    mask[3:14, 6:25, 2:9] = 1  # asymmetric on every axis: any misplacement shows
    return mask


def _flipped_axis(data: NDArray[Any], affine: NDArray[np.float64], axis: int) -> Any:
    """The same image with array ``axis`` reversed and the affine saying so."""
    out = affine.copy()
    out[:3, 3] += affine[:3, axis] * (data.shape[axis] - 1)
    out[:3, axis] *= -1.0
    return np.ascontiguousarray(np.flip(data, axis)), out


def test_rotated_mask_is_refused_and_aligned_masks_land_on_the_same_voxels(
    cluster: ClusterConfig, tmp_path: Path
) -> None:
    liver = _liver()
    # rotated 30 deg about z through the volume's centre, so it still overlaps the CT (and was
    # stored, misplaced, before the axes check)
    centre = CT_AFFINE[:3, :3] @ ((np.array(SHAPE_IJK) - 1) / 2) + CT_AFFINE[:3, 3]
    rotated = CT_AFFINE.copy()
    rotated[:3, :3] = _rot_z(30.0) @ CT_AFFINE[:3, :3]
    rotated[:3, 3] = centre - _rot_z(30.0) @ (centre - CT_AFFINE[:3, 3])
    flipped_data, flipped_affine = _flipped_axis(liver, CT_AFFINE, 0)  # negative diagonal
    flip_z, flip_z_affine = _flipped_axis(liver, CT_AFFINE, 2)
    permuted_data = np.ascontiguousarray(flip_z.transpose(1, 0, 2))  # j, i, k and z flipped
    permuted_affine = flip_z_affine[:, [1, 0, 2, 3]]
    cases = {
        "same": (liver, CT_AFFINE),
        "rotated": (liver, rotated),
        "flipped": (flipped_data, flipped_affine),
        "permuted": (permuted_data, permuted_affine),
    }
    lines = ["image,liver_mask,case_id"]
    for seed, (case, (data, affine)) in enumerate(cases.items()):
        assert np.linalg.det(affine[:3, :3]) != 0
        _save(_ct(seed), CT_AFFINE, tmp_path / f"ct_{case}.nii.gz")
        _save(data, affine, tmp_path / f"liver_{case}.nii.gz")
        lines.append(f"ct_{case}.nii.gz,liver_{case}.nii.gz,{case}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    summary = ingest(
        [], store, manifest=read_manifest(tmp_path / "m.csv", "c"), key=None, cluster=cluster
    )
    rows = {r["case_id"]: r for r in read_catalog(store).to_pylist()}
    assert set(rows) == set(cases)

    bad = rows["rotated"]
    assert (bad["status"], bad["reason"]) == ("rejected", "MASK_GRID_MISMATCH"), bad
    assert "liver_rotated.nii.gz" in bad["message"] and "30.0 deg" in bad["message"]
    assert not bad["store_path"]  # nothing stored for it
    assert summary.counts == {"ok": 3, "rejected": 1}

    expected = np.ascontiguousarray(liver.transpose(2, 1, 0)[:, ::-1, ::-1]) == 1  # RAS->zyx LPS
    for case in ("same", "flipped", "permuted"):
        row = rows[case]
        assert (row["status"], row["reason"]) == ("ok", None), row
        assert row["has_seg_reference"] is True and row["mask_resampled"] is False, row
        seg = open_scan_store(store / row["store_path"]).read("seg_reference")
        np.testing.assert_array_equal(seg == 1, expected, err_msg=case)
