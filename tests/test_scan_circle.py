"""The scan circle: finding a padded exterior and continuing the image into it."""

from __future__ import annotations

import numpy as np
import pytest

from screening.scan_circle import circle_radius, fill_out_of_field, out_of_field

PAD = -1024


def _scan(n: int = 64, nz: int = 5, *, body_radius: float = 0.8, pad: bool = True) -> np.ndarray:
    """Air with noise, a disc of 50 HU tissue, padding outside the inscribed circle."""
    rng = np.random.default_rng(0)
    ct = rng.normal(-1000, 8, (nz, n, n)).round().astype(np.int16)
    radius = circle_radius((n, n))
    ct[:, radius <= body_radius] = 50
    if pad:
        ct[:, radius > 1.0] = PAD
    return ct


def test_circle_radius_is_one_on_the_inscribed_circle() -> None:
    r = circle_radius((101, 101))
    assert r[50, 50] == 0.0
    assert r[50, 0] == pytest.approx(50 / 50.5) and r[0, 50] == pytest.approx(50 / 50.5)
    assert r[0, 0] > 1.3 and np.allclose(r, r[::-1, ::-1])
    ellipse = circle_radius((20, 40))  # non-square: the inscribed ellipse
    assert ellipse[10, 0] < 1.0 and ellipse[0, 20] < 1.0 and ellipse[0, 0] > 1.0


def test_a_padded_exterior_is_found_and_nothing_inside_it() -> None:
    ct = _scan()
    outside = out_of_field(ct, PAD)
    assert outside is not None
    exterior = circle_radius((64, 64)) > 1.0
    assert outside[exterior].all()
    assert not outside[circle_radius((64, 64)) < 0.97].any()


@pytest.mark.parametrize(
    "case",
    ["no padding", "corners imaged", "padding on few slices"],
)
def test_no_exterior_when_the_corners_hold_image(case: str) -> None:
    ct = _scan(pad=False)  # noisy air in the corners: a scanner that reconstructs them
    if case == "corners imaged":
        ct = _scan(body_radius=1.2)  # tissue in the corners is not padding either
        ct[:, circle_radius((64, 64)) > 1.0] = 40
    elif case == "padding on few slices":
        ct[:1, circle_radius((64, 64)) > 1.0] = PAD
    assert out_of_field(ct, PAD) is None


def test_a_slightly_smaller_circle_still_counts() -> None:
    ct = _scan()
    ct[:, circle_radius((64, 64)) > 0.99] = PAD  # the scanner's circle a pixel smaller
    outside = out_of_field(ct, PAD)
    assert outside is not None and outside[circle_radius((64, 64)) > 0.99].all()


def test_fill_continues_the_nearest_imaged_pixel_per_slice() -> None:
    ct = _scan(body_radius=1.2)  # the body runs past the circle: cut by it
    ct[2][circle_radius((64, 64)) <= 1.0] = 77  # one slice differs
    ct[:, circle_radius((64, 64)) > 1.0] = PAD
    before = ct.copy()
    outside = out_of_field(ct, PAD)
    assert outside is not None
    filled = fill_out_of_field(ct, outside)
    np.testing.assert_array_equal(ct, before)  # the input is left alone
    assert (filled[:, ~outside] == ct[:, ~outside]).all()
    assert (filled[[0, 1, 3, 4]][:, outside] == 50).all()
    assert (filled[2][outside] == 77).all()
