"""The scan circle: CT scanners reconstruct only inside the circle inscribed in the image matrix.

Outside it the image holds a padding value (PixelPaddingValue, or a stored value far below air),
which ingest turns into ``HU_MIN``. Chest CT is often reconstructed with a field of view tighter
than the patient (LIDC-IDRI: 236–350 mm): the circle then cuts through the body, often at the
liver, and a segmentation network reads the cut as the body's edge. These pure functions find
that padded exterior and continue the image into it, so the network sees tissue going on.

>>> radius = circle_radius((4, 4))
>>> bool(radius[0, 0] > 1.0), bool(radius[1, 1] < 1.0)
(True, True)
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "circle_radius",
    "exterior_from_json",
    "exterior_to_json",
    "fill_out_of_field",
    "out_of_field",
]


def circle_radius(shape_yx: tuple[int, int]) -> NDArray[np.float64]:
    """Each pixel's distance from the matrix centre, in units of the inscribed circle's radius
    (an ellipse for a non-square matrix): > 1 outside the scan circle. Shape ``(ny, nx)``."""
    ny, nx = shape_yx
    yy, xx = np.ogrid[:ny, :nx]
    radius: NDArray[np.float64] = np.hypot(
        (yy - (ny - 1) / 2) / (ny / 2), (xx - (nx - 1) / 2) / (nx / 2)
    )
    return radius


def out_of_field(
    ct_hu: NDArray[Any],
    padding_hu: int,
    *,
    min_slice_fraction: float = 0.99,
    min_exterior_fraction: float = 0.9,
    band: float = 0.02,
) -> NDArray[np.bool_] | None:
    """Pixels ``(ny, nx)`` outside the scan circle that hold ``padding_hu`` on (nearly) every
    slice of ``ct_hu`` ``(nz, ny, nx)``; None when the image has no padded exterior (fewer than
    ``min_exterior_fraction`` of the exterior pixels padded: a scanner that reconstructs the
    corners, or a volume resampled from one).

    A scanner's circle may be a pixel or two smaller than the inscribed one: padded pixels down
    to ``1 - band`` of the radius belong to the exterior too. Air clipped to the padding value
    could pass for padding in the corners; that is harmless, since continuing air into air
    changes nothing.
    """
    radius = circle_radius((ct_hu.shape[1], ct_hu.shape[2]))
    exterior = radius > 1.0
    if not exterior.any():
        return None
    candidates = radius > 1.0 - band
    padded = (ct_hu[:, candidates] == padding_hu).mean(axis=0) >= min_slice_fraction
    outside = np.zeros(exterior.shape, dtype=bool)
    outside[candidates] = padded
    if outside[exterior].mean() < min_exterior_fraction:
        return None
    return outside


def fill_out_of_field(ct_hu: NDArray[Any], outside_yx: NDArray[np.bool_]) -> NDArray[Any]:
    """A copy of ``ct_hu`` ``(nz, ny, nx)`` where every ``outside_yx`` pixel takes the value of
    the nearest pixel inside the field on the same slice (the 2-D form of repeating an image
    edge). ``ct_hu`` itself is left as it is."""
    _, (iy, ix) = ndimage.distance_transform_edt(outside_yx, return_indices=True)
    filled = ct_hu.copy()
    filled[:, outside_yx] = ct_hu[:, iy[outside_yx], ix[outside_yx]]
    return filled


def exterior_to_json(outside_yx: NDArray[np.bool_] | None) -> dict[str, Any] | None:
    """An exterior ``(ny, nx)`` as a small JSON value (bits, zlib, base64: a few hundred
    bytes for a circle), for the attributes of a store; None stays None."""
    if outside_yx is None:
        return None
    packed = zlib.compress(np.packbits(outside_yx, axis=None).tobytes(), 9)
    return {"shape_yx": list(outside_yx.shape), "bits": base64.b64encode(packed).decode()}


def exterior_from_json(value: dict[str, Any] | None) -> NDArray[np.bool_] | None:
    """The inverse of :func:`exterior_to_json`.

    >>> mask = circle_radius((5, 7)) > 1.0
    >>> bool((exterior_from_json(exterior_to_json(mask)) == mask).all())
    True
    """
    if value is None:
        return None
    ny, nx = (int(n) for n in value["shape_yx"])
    bits = np.frombuffer(zlib.decompress(base64.b64decode(value["bits"])), dtype=np.uint8)
    return np.unpackbits(bits, count=ny * nx).astype(bool).reshape(ny, nx)
