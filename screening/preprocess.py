"""Model input: resample the CT to the model grid (linear) and window HU to [0, 1].

The paper resamples to 0.7 × 0.7 × 2.5 mm with linear interpolation and windows [−200, 250] HU
to [0, 1]; both are configurable (:class:`PreprocessConfig`), and a model's card says which
grid and window it was trained on.

Grid convention (shared by every resampling in this package): voxel-centre grids that cover
the same physical extent. Along an axis with input spacing ``s_in`` and output spacing
``s_out``, ``n_out = round(n_in * s_in / s_out)`` and output voxel ``i`` sits at input index
``(i + 0.5) * step - 0.5`` with ``step = s_out / s_in``; positions past the edge voxels take the
edge value. This is ``scipy.ndimage.zoom(grid_mode=True)`` and ``torch.nn.functional.
interpolate(align_corners=False)`` with the exact spacing ratio, and mapping back uses the same
rule with the inverse ratio. The first output voxel centre moves by ``(s_out - s_in) / 2`` mm
(:func:`resampled_origin_mm`). The tests use ``scipy.ndimage.affine_transform(order=1,
mode="nearest")`` as the reference.

Trilinear interpolation on an axis-aligned grid is separable: z by gathering the two
neighbouring slices and ``lerp``, then y and x with torch's bilinear kernel (or, for arbitrary
offsets, two more gathers), slab by slab in z, with slabs small enough to stay in cache. Memory
is bounded by the output plus one slab.

>>> import numpy as np
>>> ct = np.full((8, 4, 4), 25, dtype=np.int16)
>>> prep = preprocess_volume(ct, (5.0, 1.4, 1.4), PreprocessConfig())
>>> prep.shape, prep.dtype.name, float(prep.max())
((16, 8, 8), 'float16', 0.5)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.store.scan import ScanStore, open_scan_store, write_derived_array

if TYPE_CHECKING:
    import torch

__all__ = [
    "PAPER_SPACING_MM",
    "PAPER_WINDOW_HU",
    "PrepSpec",
    "Prepared",
    "PreprocessConfig",
    "centred_offsets",
    "grid_shape",
    "preprocess_volume",
    "read_prep",
    "resample_labels_nearest",
    "resample_linear",
    "resampled_origin_mm",
    "window_unit",
    "write_prep",
]

log = logging.getLogger(__name__)

#: The paper's model grid (z, y, x) mm and HU window.
PAPER_SPACING_MM: tuple[float, float, float] = (2.5, 0.7, 0.7)
PAPER_WINDOW_HU: tuple[float, float] = (-200.0, 250.0)

# Output voxels per slab: ~1 MB float32 temporaries stay in cache (measured: 3x faster than
# 32 MB slabs on a full-size volume, bench/bench_segmentation.py).
_SLAB_VOXELS = 1 << 18


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig(FrozenConfig):
    """Model grid and intensity window.

    Parameters
    ----------
    spacing_mm : (z, y, x) mm
        Target voxel spacing (default: the paper's 2.5 × 0.7 × 0.7 mm).
    window_hu : (low, high) HU
        Clipped and rescaled linearly to [0, 1].
    """

    spacing_mm: tuple[float, float, float] = PAPER_SPACING_MM
    window_hu: tuple[float, float] = PAPER_WINDOW_HU

    def __post_init__(self) -> None:
        require(
            len(self.spacing_mm) == 3 and all(s > 0 for s in self.spacing_mm),
            f"spacing_mm must be three positive mm values (z, y, x), got {self.spacing_mm}",
        )
        lo, hi = self.window_hu
        require(lo < hi, f"window_hu must be (low, high) with low < high, got {self.window_hu}")

    #: The U-Net backend reads the CT too (its cascade's coarse pass), so ``prep`` does not
    #: stand in for it (:attr:`PrepSpec.replaces_ct`).
    replaces_ct = False

    def prepare(
        self, ct_hu: NDArray[np.int16], spacing_mm: Sequence[float], *, threads: int | None
    ) -> Prepared:
        """:func:`preprocess_volume` (the :class:`PrepSpec` form)."""
        image = preprocess_volume(ct_hu, spacing_mm, self, threads=threads)
        return Prepared(image, _shape3(ct_hu.shape))


def _shape3(shape: Sequence[int]) -> tuple[int, int, int]:
    return (int(shape[0]), int(shape[1]), int(shape[2]))


@dataclass(frozen=True)
class Prepared:
    """What a :class:`PrepSpec` makes of a CT: the model-grid ``image`` (float16 in [0, 1],
    written as ``prep``), the CT's ``ct_shape`` (z, y, x) and ``ct_notes``, JSON values the
    segmenter needs from the CT besides the image (``liver3mm``: the scan circle's padded
    exterior). Shape and notes are stored in the ``prep`` attributes, so a segmenter whose
    spec :attr:`~PrepSpec.replaces_ct` runs without reading the CT again."""

    image: NDArray[np.float16]
    ct_shape: tuple[int, int, int]
    ct_notes: Mapping[str, Any] = field(default_factory=dict)


class PrepSpec(Protocol):
    """How a model's input is made from the CT: what a CPU task writes as ``prep`` so that the
    GPU task only runs the network. :class:`PreprocessConfig` is the paper's; a model with its
    own preprocessing (``screening.model.liver3mm``) has its own. A ``prep`` is reused only
    when its recorded digest is this spec's."""

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """The model grid (z, y, x) mm (the voxel-centre convention of this module)."""
        ...

    @property
    def replaces_ct(self) -> bool:
        """Whether a :class:`Prepared` of this spec is all its segmenter needs: then the GPU
        task does not read the CT (a full chest CT is ~160 MB to read and hash)."""
        ...

    def digest(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def prepare(
        self, ct_hu: NDArray[np.int16], spacing_mm: Sequence[float], *, threads: int | None
    ) -> Prepared:
        """The model-grid image (float16 in [0, 1]) and what the segmenter needs of the CT."""
        ...


def grid_shape(
    shape: Sequence[int], spacing_mm: Sequence[float], target_spacing_mm: Sequence[float]
) -> tuple[int, int, int]:
    """Shape of the grid with ``target_spacing_mm`` covering the same physical extent."""
    out = tuple(
        max(1, round(n * s / t))
        for n, s, t in zip(shape, spacing_mm, target_spacing_mm, strict=True)
    )
    return (out[0], out[1], out[2])


def centred_offsets(step_zyx: Sequence[float]) -> tuple[float, float, float]:
    """Input index of output voxel 0 on voxel-centre grids of the same extent: (step - 1) / 2."""
    o = [(float(st) - 1.0) / 2.0 for st in step_zyx]
    return (o[0], o[1], o[2])


def resampled_origin_mm(
    origin_mm: Sequence[float], spacing_mm: Sequence[float], target_spacing_mm: Sequence[float]
) -> tuple[float, float, float]:
    """LPS ``[x, y, z]`` of the resampled grid's first voxel (canonical axes; spacing z, y, x)."""
    shift_zyx = [(t - s) / 2.0 for s, t in zip(spacing_mm, target_spacing_mm, strict=True)]
    x, y, z = (float(o) for o in origin_mm)
    return (x + shift_zyx[2], y + shift_zyx[1], z + shift_zyx[0])


def _axis_taps(
    n_in: int, n_out: int, step: float, offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbour indices and right-hand weights for output positions ``offset + i * step``."""
    import torch

    pos = (torch.arange(n_out, dtype=torch.float64) * step + offset).clamp_(0.0, n_in - 1.0)
    left = pos.floor().long()
    right = (left + 1).clamp_(max=n_in - 1)
    return left, right, (pos - left).float()


def _lerp_axis(
    t: torch.Tensor, axis: int, taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    left, right, w = taps
    a = t.index_select(axis, left).float()
    b = t.index_select(axis, right).float()
    shape = [1] * t.ndim
    shape[axis] = w.numel()
    return a.lerp_(b, w.view(shape))


def _is_identity(n_in: int, n_out: int, step: float, offset: float) -> bool:
    return n_in == n_out and offset == 0.0 and math.isclose(step, 1.0, rel_tol=0, abs_tol=1e-9)


def resample_linear(
    volume: NDArray[Any],
    step_zyx: Sequence[float],
    out_shape: Sequence[int],
    *,
    offset_zyx: Sequence[float] | None = None,
    out: NDArray[Any] | None = None,
    transform: Any = None,
) -> NDArray[Any]:
    """Trilinear resampling of the last three axes of ``volume`` onto a scaled grid.

    Parameters
    ----------
    volume : (..., nz, ny, nx) array, any real dtype
        Leading axes (e.g. class channels) are carried along.
    step_zyx
        Input index distance between neighbouring output voxels, per axis
        (``out_spacing / in_spacing``).
    out_shape : (nz, ny, nx)
    offset_zyx
        Input index of output voxel 0; None: the voxel-centre convention of this module,
        ``(step - 1) / 2``.
    out
        Optional preallocated result (any float dtype); a new float32 array otherwise.
    transform
        Optional function applied to each float32 torch slab before it is stored (e.g. the
        window), so the whole float32 volume never exists at once.
    """
    import torch

    lead = volume.shape[:-3]
    n_in = volume.shape[-3:]
    nz, ny, nx = (int(n) for n in out_shape)
    offsets = centred_offsets(step_zyx) if offset_zyx is None else tuple(offset_zyx)
    if out is None:
        out = np.empty((*lead, nz, ny, nx), dtype=np.float32)
    src = torch.from_numpy(np.ascontiguousarray(volume))
    taps = [
        None
        if _is_identity(n_in[a], n, step_zyx[a], offsets[a])
        else _axis_taps(n_in[a], n, step_zyx[a], offsets[a])
        for a, n in enumerate((nz, ny, nx))
    ]
    # torch's bilinear kernel does y and x in one pass when the offsets are the centred ones.
    in_plane_kernel = (taps[1] is not None or taps[2] is not None) and all(
        math.isclose(offsets[a], (step_zyx[a] - 1.0) / 2.0, abs_tol=1e-12) for a in (1, 2)
    )
    nd = len(lead)
    slab = max(1, _SLAB_VOXELS // max(1, ny * nx * int(np.prod(lead, dtype=np.int64))))
    dst = torch.from_numpy(out)
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        if taps[0] is None:
            part = src[..., z0:z1, :, :].to(torch.float32, copy=True)
        else:
            left, right, w = taps[0]
            part = _lerp_axis(src, nd, (left[z0:z1], right[z0:z1], w[z0:z1]))
        if in_plane_kernel:
            flat = part.reshape(-1, 1, part.shape[-2], part.shape[-1])
            flat = torch.ops.aten.upsample_bilinear2d(
                flat, [ny, nx], False, 1.0 / step_zyx[1], 1.0 / step_zyx[2]
            )
            part = flat.reshape(*part.shape[:-2], ny, nx)
        else:
            for axis in (1, 2):
                t = taps[axis]
                if t is not None:
                    part = _lerp_axis(part, nd + axis, t)
        if transform is not None:
            part = transform(part)
        dst[..., z0:z1, :, :] = part
    return out


def resample_labels_nearest(
    labels: NDArray[np.integer[Any]], step_zyx: Sequence[float], out_shape: Sequence[int]
) -> NDArray[np.integer[Any]]:
    """Nearest-neighbour resampling of a label volume on the same grid convention."""
    idx = [
        np.clip(np.rint((np.arange(n) + 0.5) * step - 0.5), 0, n_in - 1).astype(np.intp)
        for n, step, n_in in zip(out_shape, step_zyx, labels.shape, strict=True)
    ]
    return labels[np.ix_(*idx)]


def window_unit(hu: torch.Tensor, window_hu: tuple[float, float]) -> torch.Tensor:
    """Clip to ``window_hu`` and rescale linearly to [0, 1] (in place on float tensors)."""
    lo, hi = window_hu
    return hu.clamp_(lo, hi).sub_(lo).mul_(1.0 / (hi - lo))


def preprocess_volume(
    ct_hu: NDArray[np.int16],
    spacing_mm: Sequence[float],
    cfg: PreprocessConfig,
    *,
    threads: int | None = None,
) -> NDArray[np.float16]:
    """Resample ``ct_hu`` (z, y, x) to ``cfg.spacing_mm`` and window it: float16 in [0, 1].

    ``threads`` sets torch's CPU thread count for the call (None keeps the current setting).
    """
    import torch

    require(ct_hu.ndim == 3, f"ct_hu must be 3-D (z, y, x), got shape {ct_hu.shape}")
    shape = grid_shape(ct_hu.shape, spacing_mm, cfg.spacing_mm)
    step = [t / s for s, t in zip(spacing_mm, cfg.spacing_mm, strict=True)]
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        prep = np.empty(shape, dtype=np.float16)
        resample_linear(
            ct_hu, step, shape, out=prep, transform=lambda t: window_unit(t, cfg.window_hu)
        )
    finally:
        torch.set_num_threads(before)
    return prep


def write_prep(store_path: Any, cfg: PrepSpec, *, threads: int | None = None) -> dict[str, Any]:
    """Read ``ct`` from a scan store, prepare the model input and write ``prep`` (atomically).

    An existing ``prep`` made with the same configuration is kept (a task that ran twice).
    Returns a small record: shape, spacing and the configuration digest.
    """
    store = open_scan_store(store_path)
    digest = cfg.digest()
    existing = store.derived_attrs("prep")
    if existing is not None and _made_by(existing, cfg):
        return {"prep_shape": existing["shape"], "reused": True, "preprocess_digest": digest}
    prepared = cfg.prepare(store.read("ct"), store.spacing_mm, threads=threads)
    prep = prepared.image
    attrs = {
        "spacing_mm": [float(s) for s in cfg.spacing_mm],
        "origin_mm": list(resampled_origin_mm(store.origin_mm, store.spacing_mm, cfg.spacing_mm)),
        "preprocess": cfg.to_dict(),
        "preprocess_digest": digest,
        **({"window_hu": list(cfg.window_hu)} if isinstance(cfg, PreprocessConfig) else {}),
        "shape": list(prep.shape),
        "ct_shape": list(prepared.ct_shape),
        "ct_notes": dict(prepared.ct_notes),
    }
    write_derived_array(store.path, "prep", prep, attrs)
    return {"prep_shape": list(prep.shape), "reused": False, "preprocess_digest": digest}


def _made_by(attrs: Mapping[str, Any], cfg: PrepSpec) -> bool:
    # A prep from before ct_shape/ct_notes were recorded is made again, not trusted.
    return attrs.get("preprocess_digest") == cfg.digest() and "ct_notes" in attrs


def read_prep(store: ScanStore, cfg: PrepSpec | None) -> Prepared | None:
    """The store's ``prep`` when :func:`write_prep` made it with ``cfg``, else None."""
    if cfg is None:
        return None
    attrs = store.derived_attrs("prep")
    if attrs is None or not _made_by(attrs, cfg):
        return None
    return Prepared(store.read("prep"), _shape3(attrs["ct_shape"]), attrs["ct_notes"])
