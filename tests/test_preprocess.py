"""Preprocessing against scipy.ndimage as the reference, plus its invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given
from hypothesis import strategies as st

from screening.errors import ConfigError
from screening.preprocess import (
    PreprocessConfig,
    grid_shape,
    preprocess_volume,
    resample_labels_nearest,
    resample_linear,
)
from screening.store.scan import StoreConfig, open_scan_store, write_scan_store
from screening.store.volume import ScanVolume

EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
spacings = st.tuples(*(st.sampled_from([0.5, 0.7, 0.93, 1.25, 2.5, 3.0, 5.0]) for _ in range(3)))


def _reference(ct: np.ndarray, spacing: tuple[float, ...], cfg: PreprocessConfig) -> np.ndarray:
    """scipy: linear interpolation at input index (i + 0.5) * step - 0.5, edge values beyond."""
    shape = grid_shape(ct.shape, spacing, cfg.spacing_mm)
    step = [t / s for s, t in zip(spacing, cfg.spacing_mm, strict=True)]
    offset = [(st - 1) / 2 for st in step]
    return ndi.affine_transform(
        ct.astype(np.float64),
        np.diag(step),
        offset=offset,
        output_shape=shape,
        order=1,
        mode="nearest",
    )


@given(spacing=spacings, seed=st.integers(0, 2**16))
def test_resampling_matches_scipy(spacing: tuple[float, float, float], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ct = rng.integers(-1024, 2000, size=(13, 17, 11), dtype=np.int16)
    cfg = PreprocessConfig()
    ref = _reference(ct, spacing, cfg)
    step = [t / s for s, t in zip(spacing, cfg.spacing_mm, strict=True)]
    ours = resample_linear(ct, step, ref.shape)
    # float32 arithmetic (torch's bilinear kernel keeps weights in float32) on values up to
    # ~3000 HU: the largest difference seen over these examples is ~1.2e-3 HU.
    assert np.abs(ours - ref).max() < 5e-3


@given(spacing=spacings, seed=st.integers(0, 2**16))
def test_prep_is_windowed_scipy_in_unit_range(
    spacing: tuple[float, float, float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    ct = rng.integers(-3024, 3000, size=(9, 12, 10), dtype=np.int16)
    cfg = PreprocessConfig(window_hu=(-200.0, 250.0))
    prep = preprocess_volume(ct, spacing, cfg)
    assert prep.dtype == np.float16
    assert prep.min() >= 0.0 and prep.max() <= 1.0
    expected = (np.clip(_reference(ct, spacing, cfg), -200, 250) + 200) / 450
    assert np.abs(prep.astype(np.float64) - expected).max() < 1e-3  # float16 rounding: 2^-11


@given(spacing=spacings, shape=st.tuples(*(st.integers(1, 400) for _ in range(3))))
def test_grid_keeps_physical_extent(
    spacing: tuple[float, float, float], shape: tuple[int, int, int]
) -> None:
    target = PreprocessConfig().spacing_mm
    out = grid_shape(shape, spacing, target)
    for n_in, s_in, n_out, s_out in zip(shape, spacing, out, target, strict=True):
        assert n_out >= 1
        assert abs(n_out * s_out - n_in * s_in) <= max(s_out / 2, s_out - n_in * s_in) + 1e-9


def test_linear_ramp_is_reproduced_exactly() -> None:
    z = np.arange(40, dtype=np.float64)[:, None, None] * 3.0  # 3 HU per input slice
    x = np.arange(30, dtype=np.float64)[None, None, :] * 2.0  # 2 HU per input column
    ct = np.broadcast_to(z + x, (40, 6, 30)).astype(np.int16)
    out = resample_linear(ct, (0.4, 1.0, 0.75), (100, 6, 40))
    pos_z = np.clip((np.arange(100) + 0.5) * 0.4 - 0.5, 0, 39)
    pos_x = np.clip((np.arange(40) + 0.5) * 0.75 - 0.5, 0, 29)
    np.testing.assert_allclose(out[:, 2, 7], pos_z * 3.0 + pos_x[7] * 2.0, atol=1e-3)
    np.testing.assert_allclose(out[50, 4, :], pos_z[50] * 3.0 + pos_x * 2.0, atol=1e-3)


def test_grids_share_their_extent_and_origin_shift() -> None:
    from screening.preprocess import resampled_origin_mm

    # 10 voxels of 1 mm (edges 0..10 mm) → 4 voxels of 2.5 mm: centres at 1.25, 3.75, ... mm,
    # i.e. input index 0.75, 3.25, ...; the origin moves by (2.5 - 1) / 2 mm along that axis.
    ramp = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    out = resample_linear(ramp, (2.5, 1.0, 1.0), (4, 2, 2))
    np.testing.assert_allclose(out[:, 0, 0], [0.75, 3.25, 5.75, 8.25], atol=1e-6)
    assert resampled_origin_mm((10.0, 20.0, 30.0), (1.0, 0.5, 0.8), (2.5, 0.7, 0.7)) == (
        pytest.approx(9.95),
        pytest.approx(20.1),
        pytest.approx(30.75),
    )


def test_channels_and_offsets_follow_the_same_convention() -> None:
    rng = np.random.default_rng(3)
    probs = rng.random((3, 10, 12, 9)).astype(np.float32)
    out = resample_linear(probs, (0.5, 0.75, 2.0), (7, 16, 5), offset_zyx=(4.0, 0.0, 0.0))
    for c in range(3):
        ref = ndi.affine_transform(
            probs[c].astype(np.float64),
            np.diag((0.5, 0.75, 2.0)),
            offset=(4.0, 0.0, 0.0),
            output_shape=(7, 16, 5),
            order=1,
            mode="nearest",
        )
        assert np.abs(out[c] - ref).max() < 1e-6


def test_nearest_labels_keep_values_and_shape() -> None:
    labels = np.zeros((10, 20, 20), dtype=np.uint8)
    labels[2:8, 5:15, 3:9] = 1
    labels[2:8, 5:15, 12:18] = 2
    out = resample_labels_nearest(labels, (0.5, 2.0, 2.0), (20, 10, 10))
    assert out.shape == (20, 10, 10)
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[9, 5, 2] == 1 and out[9, 5, 7] == 2  # input (4.25→4, 10.5, 4.5) and (.., 14.5)
    np.testing.assert_array_equal(resample_labels_nearest(labels, (1, 1, 1), labels.shape), labels)


@pytest.mark.parametrize(
    "kwargs",
    [{"spacing_mm": (0.0, 1.0, 1.0)}, {"spacing_mm": (1.0, 1.0)}, {"window_hu": (100.0, -100.0)}],
)
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PreprocessConfig(**kwargs)


def test_write_prep_writes_reuses_and_replaces(tmp_path: Path) -> None:
    from screening.preprocess import write_prep

    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1000, size=(12, 30, 28), dtype=np.int16)
    volume = ScanVolume(ct, (5.0, 1.4, 1.4), (-10.0, -20.0, 30.0), EYE, {"format": "nifti"})
    path = Path(write_scan_store(tmp_path, "s1", volume, {}, StoreConfig()))
    cfg = PreprocessConfig(spacing_mm=(2.5, 2.8, 2.8))
    first = write_prep(path, cfg)
    assert not first["reused"]
    store = open_scan_store(path)
    prep = store.read("prep")
    np.testing.assert_array_equal(prep, preprocess_volume(ct, (5.0, 1.4, 1.4), cfg))
    attrs = store.derived_attrs("prep")
    assert attrs is not None and attrs["spacing_mm"] == [2.5, 2.8, 2.8]
    assert attrs["origin_mm"] == pytest.approx([-9.3, -19.3, 28.75])  # centre shift (t - s) / 2
    assert write_prep(path, cfg)["reused"]
    other = PreprocessConfig(spacing_mm=(5.0, 2.8, 2.8))
    assert not write_prep(path, other)["reused"]
    assert open_scan_store(path).read("prep").shape == (12, 15, 14)
    leftovers = [p.name for p in path.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert leftovers == []
