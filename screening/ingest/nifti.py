"""NIfTI: CT volumes and label masks, brought to canonical LPS ``(z, y, x)``.

The header is checked (dimensions, size limit, affine) before any voxel is read, so a file that
declares a huge size is rejected with SIZE_LIMIT without allocating it.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from screening.errors import InputError, ValidationError
from screening.geometry import lps_to_ras
from screening.ingest.volume import CanonicalAxes, canonical_axes, to_hu_int16
from screening.location import Location, is_url
from screening.reasons import SYNTHETIC_MARK, ReasonCode, SourceFormat
from screening.store.volume import ScanVolume

__all__ = ["NIFTI_SUFFIXES", "NiftiGrid", "is_nifti", "read_nifti_ct", "read_nifti_labels"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_SLAB_VOXELS = 1 << 21  # convert to HU in slabs of ~2 M voxels (cache-sized passes)


def is_nifti(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


@dataclass(frozen=True)
class NiftiGrid:
    """Header facts, read without touching voxel data."""

    shape_ijk: tuple[int, ...]
    dtype: str
    axes: CanonicalAxes
    spacing_mm: tuple[float, float, float]  # canonical [z, y, x]
    origin_mm: tuple[float, float, float]  # LPS of canonical voxel (0, 0, 0)
    direction: tuple[tuple[float, ...], ...]  # LPS unit vectors of i, j, k

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        p = self.axes.perm
        return (self.shape_ijk[p[0]], self.shape_ijk[p[1]], self.shape_ijk[p[2]])


def _load(path: str) -> Any:
    import nibabel as nib

    try:
        if not is_url(path):
            return nib.load(path)
        # An object in a bucket: read whole (a NIfTI file is one volume), parsed in memory.
        data = Location.of(path).read_bytes()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        return nib.Nifti1Image.from_bytes(data)
    except FileNotFoundError as e:
        raise InputError(
            "the file is gone (deleted after it was listed?)",
            reason=ReasonCode.UNREADABLE_FILE,
            path=path,
        ) from e
    except Exception as e:  # nibabel raises many types for corrupt headers
        raise InputError(
            f"not a readable NIfTI file ({type(e).__name__}: {e})",
            reason=ReasonCode.UNREADABLE_FILE,
            path=path,
        ) from e


def read_grid(img: Any, path: str, max_voxels: int, axial_tolerance_deg: float) -> NiftiGrid:
    """Check the header of a loaded (not yet read) image and describe its canonical grid."""
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ValidationError(
            f"NIfTI has shape {shape}; expected a 3-D volume",
            reason=ReasonCode.NOT_A_VOLUME,
            path=path,
        )
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > max_voxels:
        raise ValidationError(
            f"NIfTI header declares {shape} = {n_voxels:,} voxels, over the limit of "
            f"{max_voxels:,} (ValidationConfig.max_voxels); nothing was read",
            reason=ReasonCode.SIZE_LIMIT,
            path=path,
        )
    affine_ras = np.asarray(img.affine, dtype=np.float64)
    affine_lps = lps_to_ras(affine_ras)  # negating x and y is its own inverse
    cols = affine_lps[:3, :3]  # column a: LPS step of array axis a
    spacing_ijk = np.linalg.norm(cols, axis=0)
    if not np.all(np.isfinite(affine_lps)) or np.any(spacing_ijk <= 0):
        raise ValidationError(
            "NIfTI affine is singular or not finite; expected a valid sform/qform",
            reason=ReasonCode.NOT_A_VOLUME,
            path=path,
        )
    try:
        axes = canonical_axes(cols.T)
    except ValueError as e:
        raise ValidationError(str(e), reason=ReasonCode.NOT_AXIAL, path=path) from e
    if axes.obliquity_deg > axial_tolerance_deg:
        raise ValidationError(
            f"NIfTI axes are {axes.obliquity_deg:.1f} deg oblique (tolerance "
            f"{axial_tolerance_deg} deg); expected an axial volume",
            reason=ReasonCode.NOT_AXIAL,
            path=path,
        )
    # Canonical voxel (0,0,0) is the source voxel at the far end of every flipped axis.
    corner = np.zeros(3)
    for c, src in enumerate(axes.perm):
        if axes.flip[c]:
            corner[src] = shape[src] - 1
    origin = affine_lps[:3, :3] @ corner + affine_lps[:3, 3]
    spacing = tuple(float(spacing_ijk[src]) for src in axes.perm)
    direction = tuple(tuple(float(v) for v in cols[:, a] / spacing_ijk[a]) for a in range(3))
    return NiftiGrid(
        shape_ijk=shape,
        dtype=str(img.get_data_dtype()),
        axes=axes,
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        origin_mm=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
    )


def _canonical_view(data: NDArray[Any], axes: CanonicalAxes) -> NDArray[Any]:
    view = data.reshape(data.shape[:3]).transpose(axes.perm)
    index = tuple(slice(None, None, -1) if f else slice(None) for f in axes.flip)
    return view[index]


def _descrip(img: Any) -> str:
    raw = img.header.get("descrip")
    value = raw.item() if hasattr(raw, "item") else raw
    return (value.decode("latin-1") if isinstance(value, bytes) else str(value or "")).strip()


def read_nifti_ct(
    path: str, max_voxels: int, axial_tolerance_deg: float = 10.0, min_slices: int = 1
) -> ScanVolume:
    """Read a CT NIfTI as int16 HU in canonical orientation.

    The NIfTI scaling (``scl_slope``/``scl_inter``) is applied in float, then values are clipped
    to [-1024, 32767] HU like DICOM. A uint8/bool image is refused as NOT_CT: it is a mask.
    Fewer than ``min_slices`` axial slices is TOO_FEW_SLICES, as for DICOM.
    """
    img = _load(path)
    grid = read_grid(img, path, max_voxels, axial_tolerance_deg)
    n_slices = grid.canonical_shape[0]
    if n_slices < min_slices:
        raise ValidationError(
            f"only {n_slices} axial slice(s); at least {min_slices} are needed for a liver "
            "volume (ValidationConfig.min_slices)",
            reason=ReasonCode.TOO_FEW_SLICES,
            path=path,
        )
    if grid.dtype in ("uint8", "bool", "int8"):
        raise ValidationError(
            f"NIfTI voxel type is {grid.dtype}, which holds labels, not Hounsfield units; "
            "expected a CT image (pass masks through the manifest's liver_mask/spleen_mask)",
            reason=ReasonCode.NOT_CT,
            path=path,
        )
    slope, inter = img.dataobj.slope, img.dataobj.inter
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    try:
        raw = np.asanyarray(img.dataobj.get_unscaled())
    except Exception as e:  # truncated or corrupt data block
        raise InputError(
            f"NIfTI voxel data unreadable ({type(e).__name__}: {e})",
            reason=ReasonCode.UNREADABLE_FILE,
            path=path,
        ) from e
    view = _canonical_view(raw, grid.axes)
    ct = np.empty(grid.canonical_shape, dtype=np.int16)
    step = max(1, _SLAB_VOXELS // max(1, ct.shape[1] * ct.shape[2]))
    floating = np.issubdtype(raw.dtype, np.floating)
    for z0 in range(0, ct.shape[0], step):
        slab = view[z0 : z0 + step]
        if floating and not np.isfinite(slab).all():
            # NaN would become 0 HU (and ±inf the clip limits): a silently wrong liver mean.
            bad = int(np.count_nonzero(~np.isfinite(view)))
            raise ValidationError(
                f"{bad} voxel(s) are NaN or infinite; expected finite CT values in every "
                "voxel (re-export the image without NaN fill, or crop it)",
                reason=ReasonCode.NON_FINITE_VALUES,
                path=path,
            )
        to_hu_int16(slab, slope, inter, out=ct[z0 : z0 + step])
    source = {
        "format": SourceFormat.NIFTI.value,
        "nifti_dtype": grid.dtype,
        "rescale_slope": [slope],
        "rescale_intercept": [inter],
        "rescale_assumed": False,
        "padding_voxels": 0,
        "obliquity_deg": round(grid.axes.obliquity_deg, 3),
        "synthetic": _descrip(img) == SYNTHETIC_MARK,
    }
    return ScanVolume(ct, grid.spacing_mm, grid.origin_mm, grid.direction, source)


def read_nifti_labels(
    path: str, labels: tuple[int, ...] | None, max_voxels: int
) -> tuple[NDArray[np.bool_], NiftiGrid]:
    """Read a mask as a canonical boolean array: voxels equal to any of ``labels`` (nonzero when
    ``labels`` is None). Returns the mask and its grid for alignment with the CT.

    Any rotation is accepted here; the caller compares ``grid.direction`` with the CT's axes
    (:func:`screening.ingest.masks.axes_angle_deg`). Axes that match no patient axes at all
    are MASK_GRID_MISMATCH (the mask, not the CT, is at fault)."""
    img = _load(path)
    try:
        grid = read_grid(img, path, max_voxels, axial_tolerance_deg=90.0)
    except ValidationError as e:
        if e.reason is not ReasonCode.NOT_AXIAL:
            raise
        raise ValidationError(
            f"mask voxel axes match no patient axes ({e.message}); expected a mask on the CT's "
            "grid axes: resample it onto the CT first",
            reason=ReasonCode.MASK_GRID_MISMATCH,
            path=path,
        ) from e
    data = np.asanyarray(img.dataobj)
    hit = data != 0 if labels is None else np.isin(np.rint(data), labels)
    return np.ascontiguousarray(_canonical_view(hit, grid.axes)), grid
