"""The phantom against a real CT (TotalSegmentator example, patient A, non-contrast)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage as ndi


def _ras_to_lps_zyx(path):
    """Canonical (z, y, x) LPS array of a NIfTI file, independently of screening's code."""
    img = nib.as_closest_canonical(nib.load(path))
    return np.asarray(img.dataobj)[::-1, ::-1, :].transpose(2, 1, 0)


def _hu_window_precision(hu, liver):
    """Share of voxels within ±15 HU of the liver median that are liver."""
    median = np.median(hu[ndi.binary_erosion(liver)])
    band = (hu >= median - 15) & (hu <= median + 15)
    return float((band & liver).sum() / band.sum())


@pytest.fixture(scope="module")
def real_patient(real_data):
    root = real_data / "totalsegmentator-example"
    hu = _ras_to_lps_zyx(root / "example_ct.nii.gz").astype(np.float32)
    liver = _ras_to_lps_zyx(root / "example_seg" / "liver.nii.gz") > 0.5
    spleen = _ras_to_lps_zyx(root / "example_seg" / "spleen.nii.gz") > 0.5
    return hu, liver, spleen


def test_same_orientation_convention_as_real_ct(real_patient, small_phantom):
    # In canonical LPS both real and synthetic livers sit at low x, spleens at high x.
    _, liver, spleen = real_patient
    assert np.nonzero(liver)[2].mean() < liver.shape[2] / 2 < np.nonzero(spleen)[2].mean()
    ph = small_phantom
    assert np.nonzero(ph.liver_mask)[2].mean() < ph.hu.shape[2] / 2
    assert np.nonzero(ph.spleen_mask)[2].mean() > ph.hu.shape[2] / 2


def test_intensity_alone_is_as_ambiguous_as_in_real_ct(real_patient, small_phantom):
    hu, liver, _ = real_patient
    real = _hu_window_precision(hu, liver)
    synthetic = _hu_window_precision(small_phantom.hu.astype(np.float32), small_phantom.liver_mask)
    assert real < 0.5  # what the real scan shows (about 0.23)
    assert synthetic < 0.5, f"phantom liver too easy by HU: precision {synthetic:.2f}"
