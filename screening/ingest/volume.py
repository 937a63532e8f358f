"""The pure functions that put a CT volume in canonical orientation and HU.

Readers (DICOM, NIfTI) return a :class:`~screening.store.volume.ScanVolume`: int16 HU indexed
``(z, y, x)`` toward (Superior, Posterior, Left) (docs/data-contracts.md), with spacing and
origin, plus the source's original direction cosines so nothing about the input is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "HU_MAX",
    "HU_MIN",
    "CanonicalAxes",
    "canonical_axes",
    "hu_int16_in_place",
    "to_hu_int16",
]

#: Air. Stored values that rescale below this (padding -2000/-3024, out-of-field) are set to it.
HU_MIN = -1024
#: int16 ceiling: dense metal above it is clipped, never wrapped around.
HU_MAX = 32767


@dataclass(frozen=True)
class CanonicalAxes:
    """How to bring a source array to canonical ``(z, y, x)``.

    ``perm[c]`` is the source axis that becomes canonical axis ``c`` (0 z, 1 y, 2 x) and
    ``flip[c]`` says whether it must be reversed so the index increases toward S, P, L.
    ``obliquity_deg`` is the largest angle between a source axis and its canonical axis (the
    small rotation that canonicalisation drops).
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    obliquity_deg: float


def canonical_axes(axis_dirs_lps: NDArray[np.float64]) -> CanonicalAxes:
    """Match source axes to canonical ones by their dominant LPS component.

    Parameters
    ----------
    axis_dirs_lps : (3, 3) float
        Row ``a`` is the direction (any length) in which source axis ``a`` increases, in LPS.

    >>> ax = canonical_axes(np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]]))  # RAS i, j, k
    >>> ax.perm, ax.flip
    ((2, 1, 0), (False, True, True))
    """
    dirs = np.asarray(axis_dirs_lps, dtype=np.float64)
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    world = np.argmax(np.abs(unit), axis=1)  # LPS component each source axis runs along
    if sorted(world.tolist()) != [0, 1, 2]:
        raise ValueError(f"source axes do not span three distinct directions: {unit.tolist()}")
    perm: list[int] = [0, 0, 0]
    flip: list[bool] = [False, False, False]
    angles = []
    for src_axis, lps_axis in enumerate(world.tolist()):
        canonical = 2 - lps_axis  # LPS x, y, z -> canonical index 2, 1, 0
        perm[canonical] = src_axis
        component = unit[src_axis, lps_axis]
        flip[canonical] = bool(component < 0)
        angles.append(float(np.degrees(np.arccos(min(1.0, abs(component))))))
    return CanonicalAxes((perm[0], perm[1], perm[2]), (flip[0], flip[1], flip[2]), max(angles))


def to_hu_int16(
    stored: NDArray[Any],
    slope: float,
    intercept: float,
    padding: NDArray[np.bool_] | None = None,
    out: NDArray[np.int16] | None = None,
) -> NDArray[np.int16]:
    """Rescale stored values to HU in float, clip to ``[HU_MIN, HU_MAX]``, round to int16.

    Padding voxels (``padding`` true) become air (``HU_MIN``) so they never count as tissue;
    values below -1024 HU (padding written as -2000 or -3024) are clipped the same way. Float
    arithmetic first means no int16 wraparound for any slope, intercept or stored dtype.

    >>> to_hu_int16(np.array([0, 1024, 2000, 65535], np.uint16), 1.0, -1024.0)
    array([-1024,     0,   976, 32767], dtype=int16)
    """
    if slope == 1.0 and float(intercept).is_integer() and stored.dtype in (np.uint16, np.int16):
        return _to_hu_int16_integer(stored, int(intercept), padding, out)
    hu = stored.astype(np.float32)
    if slope != 1.0:
        hu *= np.float32(slope)
    if intercept != 0.0:
        hu += np.float32(intercept)
    if padding is not None:
        hu[padding] = HU_MIN
    np.clip(hu, HU_MIN, HU_MAX, out=hu)
    np.rint(hu, out=hu)
    if out is None:
        return hu.astype(np.int16)
    out[...] = hu
    return out


def _to_hu_int16_integer(
    stored: NDArray[Any],
    intercept: int,
    padding: NDArray[np.bool_] | None,
    out: NDArray[np.int16] | None,
) -> NDArray[np.int16]:
    """The common case (16-bit stored values, slope 1, integer intercept) in integer arithmetic:
    a copy into the output's memory, then :func:`hu_int16_in_place`."""
    result = np.empty(stored.shape, dtype=np.int16) if out is None else out
    work = result.view(stored.dtype)
    work[...] = stored
    hu_int16_in_place(work, intercept, padding)
    return result


def hu_int16_in_place(
    stored: NDArray[Any], intercept: int, padding: NDArray[np.bool_] | None
) -> None:
    """:func:`to_hu_int16` for slope 1 and an integer intercept, overwriting ``stored`` (16-bit
    stored values in the memory of the int16 output slice): no temporary arrays at all.

    Clip in the stored type so that ``stored + intercept`` lands in [HU_MIN, HU_MAX], then add
    the intercept modulo 2**16: the true sum fits int16, so the wrapped bits viewed as int16
    are exactly it. The clip is done only when a min/max check finds values outside: the
    read-only reductions cost a fifth of ``np.clip``'s pass and real data rarely needs it
    (bench/bench_ingest.py).
    """
    info = np.iinfo(stored.dtype)
    lo = max(HU_MIN - intercept, info.min)
    hi = min(HU_MAX - intercept, info.max)
    if lo > hi:  # every value falls outside [HU_MIN, HU_MAX]: all clip to one end
        stored.view(np.int16)[...] = HU_MIN if HU_MIN - intercept > info.max else HU_MAX
    elif stored.size:
        kind = stored.dtype.type
        if lo > info.min and stored.min() < lo:
            np.maximum(stored, kind(lo), out=stored)
        if hi < info.max and stored.max() > hi:
            np.minimum(stored, kind(hi), out=stored)
        np.add(stored, np.array(intercept % 65536, np.uint16).view(stored.dtype), out=stored)
    if padding is not None:
        stored.view(np.int16)[padding] = HU_MIN
