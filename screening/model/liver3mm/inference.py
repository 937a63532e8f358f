"""Liver segmentation of one CT volume with the ported pyliverlesionseg network.

Pure array functions: canonical ``(z, y, x)`` int16 HU plus ``spacing_mm`` in, a boolean liver
mask on the same grid out. Preprocessing and inference follow the original
(``cnn_liver_lesion_seg_CT_MR_main``): linear resampling to 1.5 mm, a 3-voxel median filter,
linear resampling to the 3 mm model grid, HU clipped to [-200, 200] and scaled to [-0.5, 0.5];
the image centred in the network's fixed 189 × 162 × 162 input segment, zero elsewhere, since
the instance normalisation sees the whole segment. What replaces the original's field-of-view
crop (lung and hip heuristics that cut half the liver or fail on chest-only scans):

1. **Body box**: voxels above -150 HU on the model grid, eroded once, largest component, grown
   back by the erosion: the patient without table and air, as the original's own first crop.
2. **Windows**: a box that fits the 489 × 408 × 408 mm output is centred in one segment, as the
   original centred its crop; a longer one (chest-abdomen-pelvis) is covered by overlapping
   windows whose probabilities are averaged.
3. **Cut field of view**: where the scan's edge cuts through the body in x or y (a
   reconstruction tighter than the patient; > 20 % of that image face is body), the segment
   beyond that edge repeats the edge voxels instead of zeros, so the network does not see water
   where tissue goes on (LiTS 117: Dice 0.89 → 0.95).
4. **Cut scan circle**: where the reconstruction circle (tighter than the patient, common in
   chest CT) cuts through the body, the padded exterior is filled with the nearest imaged
   pixel before preprocessing (``screening.scan_circle``), so the network sees tissue go on
   instead of a circular skin; the liver mask is then kept inside the circle (a 230 mm circle
   on the TotalSegmentator example's top 96 mm: Dice 0.89 → 0.96).
5. **Noisy scans** (low-dose chest CT with a sharp kernel): when the noise left in the 3 mm
   image, a robust SD of its residual from a 3 × 3 × 3 median over soft tissue, exceeds 12 HU
   (clean real scans here: 5–8 HU), the 1.5 mm median is 5 × 5 × 5 instead of 3 × 3 × 3
   (the TotalSegmentator example with noise of SD 80 HU on its 3 mm voxels: Dice 0.54 → 0.84).
6. **Hysteresis post-processing** on the model grid: the largest connected region of confident
   liver (p > 0.7) grown by at most 6 mm through p > 0.5. The original's erosion → largest
   component → dilation at p > 0.5 keeps the colon and bowel the network half-believes under the
   liver tip, joined through a broad neck (+300 mL on the TotalSegmentator example; the original
   avoided them by cropping at the hip). Probabilities inside the region are interpolated onto
   the native grid and thresholded there: smooth boundaries, no 3 mm staircase.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from screening.config import FrozenConfig, require
from screening.masks import bounding_box
from screening.model.liver3mm.network import INPUT_SEGMENT_XYZ, OUTPUT_MARGIN, OUTPUT_SEGMENT_XYZ
from screening.scan_circle import (
    exterior_from_json,
    exterior_to_json,
    fill_out_of_field,
    out_of_field,
)

if TYPE_CHECKING:
    import torch

    from screening.preprocess import Prepared

__all__ = [
    "MODEL_SPACING_MM",
    "Box3",
    "Liver3mmConfig",
    "Liver3mmPrep",
    "Liver3mmResult",
    "body_box",
    "cut_scan_circle",
    "cut_sides",
    "liver_region",
    "network_input",
    "predict_liver_probability",
    "prep_image",
    "residual_noise_hu",
    "segment_liver_3mm",
    "segments",
]

log = logging.getLogger(__name__)

#: The model grid (isotropic 3 mm, the HDF5 file's ``header/voxel_size``).
MODEL_SPACING_MM: tuple[float, float, float] = (3.0, 3.0, 3.0)
#: The original's intermediate grid, where it median-filters.
MEDIAN_SPACING_MM: tuple[float, float, float] = (1.5, 1.5, 1.5)
#: Residual noise (HU) of the 3 mm image above which the median is 5 × 5 × 5: between the clean
#: real scans (5–8 HU) and scans where the 3 × 3 × 3 median leaves the network lost (TS example
#: + SD 50 HU: 16 HU, Dice 0.88 → 0.92 with 5 × 5 × 5; clean scans lose 0.004–0.008 with it).
DENOISE_ABOVE_HU = 12.0

Box3 = tuple[slice, slice, slice]
#: Per canonical axis (z, y, x): is the (low, high) side of the image cut through the body?
CutSides = tuple[tuple[bool, bool], tuple[bool, bool], tuple[bool, bool]]

_STRUCT_6 = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True, kw_only=True)
class Liver3mmConfig(FrozenConfig):
    """How the 3 mm liver network is applied.

    Parameters
    ----------
    threshold
        Liver probability above which a voxel can be liver (the original's 0.5).
    core_threshold
        Probability of the confident core the liver region grows from.
    grow_mm
        How far the region may grow from the core through ``threshold``.
    window_overlap
        Fraction of a window shared with its neighbour when the body is longer than one window.
    body_threshold_hu
        Voxels above it are the patient's body (the original's ``tissue_th``).
    cut_face_fraction
        An x/y image face counts as cutting through the body when more of it than this is body.
    bf16
        bfloat16 autocast on CUDA, and on CPUs with native bfloat16 (AVX512-BF16 / AMX; else
        the CPU stays float32, where emulated bfloat16 would be slower). Measured on real CT:
        BENCHMARKS.md "Real CT".
    channels_last
        Channels-last 3-D memory layout (exact; 1.3× faster on CPU here).
    continue_scan_circle
        Fill a padded exterior that the scan circle cuts through the body with the nearest
        imaged pixel before the network sees it (point 4 above).
    denoise_above_hu
        Residual noise (HU, on the 3 mm image) above which the 1.5 mm median is 5 × 5 × 5
        instead of 3 × 3 × 3 (point 5 above); None keeps the original's 3 × 3 × 3 always.
    """

    threshold: float = 0.5
    core_threshold: float = 0.7
    grow_mm: float = 6.0
    window_overlap: float = 0.5
    body_threshold_hu: float = -150.0
    cut_face_fraction: float = 0.2
    bf16: bool = True
    channels_last: bool = True
    continue_scan_circle: bool = True
    denoise_above_hu: float | None = DENOISE_ABOVE_HU

    def __post_init__(self) -> None:
        require(
            self.denoise_above_hu is None or self.denoise_above_hu > 0,
            f"denoise_above_hu must be > 0 HU (or None), got {self.denoise_above_hu}",
        )
        require(0.0 < self.threshold < 1.0, f"threshold must be in (0, 1), got {self.threshold}")
        require(
            self.threshold <= self.core_threshold < 1.0,
            f"core_threshold must be in [threshold, 1), got {self.core_threshold}",
        )
        require(self.grow_mm >= 0, f"grow_mm must be >= 0, got {self.grow_mm}")
        require(
            0.0 <= self.window_overlap < 0.9,
            f"window_overlap must be in [0, 0.9), got {self.window_overlap}",
        )
        require(
            0.0 < self.cut_face_fraction <= 1.0,
            f"cut_face_fraction must be in (0, 1], got {self.cut_face_fraction}",
        )

    def prep_spec(self) -> Liver3mmPrep:
        """The preprocessing part of this configuration (what ``prep`` depends on)."""
        return Liver3mmPrep(
            continue_scan_circle=self.continue_scan_circle,
            body_threshold_hu=self.body_threshold_hu,
            denoise_above_hu=self.denoise_above_hu,
        )


#: The ``ct_notes`` key of the scan circle's padded exterior (None: none cuts the body).
SCAN_CIRCLE_NOTE = "scan_circle_exterior"


@dataclass(frozen=True, kw_only=True)
class Liver3mmPrep(FrozenConfig):
    """The model's own preprocessing as a :class:`~screening.preprocess.PrepSpec`: a CPU task
    writes it as ``prep`` (the 3 mm image, ``network_input + 0.5`` in float16), so the GPU
    task only runs the network and the post-processing. The in-memory path goes through the
    same float16 image, so a run gives the same masks with or without GPU workers."""

    continue_scan_circle: bool = True
    body_threshold_hu: float = -150.0
    denoise_above_hu: float | None = DENOISE_ABOVE_HU

    #: The GPU task needs only the image, the CT's shape and the scan circle's exterior.
    replaces_ct = True

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return MODEL_SPACING_MM

    def prepare(
        self, ct_hu: NDArray[np.int16], spacing_mm: Sequence[float], *, threads: int | None
    ) -> Prepared:
        from screening.model.inference import torch_threads
        from screening.preprocess import Prepared

        outside = self.cut_circle(ct_hu)
        with torch_threads(threads):
            image = prep_image(ct_hu, spacing_mm, outside, self.denoise_above_hu)
        nz, ny, nx = ct_hu.shape
        notes = {SCAN_CIRCLE_NOTE: exterior_to_json(outside)}
        return Prepared(image, (int(nz), int(ny), int(nx)), notes)

    def cut_circle(self, ct_hu: NDArray[Any]) -> NDArray[np.bool_] | None:
        """The padded exterior ``(ny, nx)`` to continue (:func:`cut_scan_circle`), if any."""
        return cut_scan_circle(ct_hu, self.body_threshold_hu) if self.continue_scan_circle else None


@dataclass
class Liver3mmResult:
    """The liver mask on the native grid, plus what it took to get it."""

    liver: NDArray[np.bool_]
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    n_windows: int = 0
    body_box_zyx: tuple[tuple[int, int], ...] | None = None  # on the 3 mm grid
    cut_sides: CutSides | None = None
    scan_circle_continued: bool = False


# ----------------------------------------------------------------------------- preprocessing


def _resample(
    volume: NDArray[Any], spacing_mm: Sequence[float], target_mm: Sequence[float]
) -> NDArray[np.float32]:
    from screening.preprocess import grid_shape, resample_linear

    shape = grid_shape(volume.shape, spacing_mm, target_mm)
    step = [t / s for s, t in zip(spacing_mm, target_mm, strict=True)]
    return resample_linear(volume, step, shape)


def _scaled(hu: float) -> float:
    return float(np.clip(hu / 1000.0, -0.2, 0.2) * 2.5)


def network_input(
    ct_hu: NDArray[Any], spacing_mm: Sequence[float], denoise_above_hu: float | None = None
) -> NDArray[np.float32]:
    """The model-grid image, canonical ``(z, y, x)`` on a 3 mm grid of the scan's extent:
    1.5 mm, median of 3 × 3 × 3, 3 mm, ``clip(HU / 1000, ±0.2) × 2.5``. When
    :func:`residual_noise_hu` of that 3 mm image exceeds ``denoise_above_hu`` (None: never),
    the median is 5 × 5 × 5 instead."""
    fine = _resample(ct_hu, spacing_mm, MEDIAN_SPACING_MM)
    coarse = _resample(
        ndimage.median_filter(fine, size=3, mode="nearest"), MEDIAN_SPACING_MM, MODEL_SPACING_MM
    )
    if denoise_above_hu is not None and residual_noise_hu(coarse) > denoise_above_hu:
        coarse = _resample(
            ndimage.median_filter(fine, size=5, mode="nearest"),
            MEDIAN_SPACING_MM,
            MODEL_SPACING_MM,
        )
    del fine
    np.clip(coarse / 1000.0, -0.2, 0.2, out=coarse)
    coarse *= 2.5
    return coarse


def residual_noise_hu(image_hu: NDArray[np.float32]) -> float:
    """Noise left in an HU image: 1.4826 × the median absolute deviation of its residual from a
    3 × 3 × 3 median, over soft tissue (that median in (-100, 200) HU); 0 without soft tissue.
    Edges barely move a median, so this measures the noise, not the anatomy (the clean real
    scans here: 5–8 HU on the 3 mm grid; with added noise of SD 30 HU on 3 mm voxels: 11)."""
    smooth = ndimage.median_filter(image_hu, size=3, mode="nearest")
    tissue = (smooth > -100.0) & (smooth < 200.0)
    if not tissue.any():
        return 0.0
    residual = image_hu[tissue] - smooth[tissue]
    return float(1.4826 * np.median(np.abs(residual - np.median(residual))))


def prep_image(
    ct_hu: NDArray[Any],
    spacing_mm: Sequence[float],
    outside: NDArray[np.bool_] | None,
    denoise_above_hu: float | None = None,
) -> NDArray[np.float16]:
    """The network's 3 mm image as float16 in [0, 1] (``network_input + 0.5``; steps of
    0.2 HU), with the ``outside`` of a scan circle that cuts the body continued first
    (:meth:`Liver3mmPrep.cut_circle`; None: nothing to continue)."""
    seen = ct_hu if outside is None else fill_out_of_field(ct_hu, outside)
    image = network_input(seen, spacing_mm, denoise_above_hu)
    del seen
    image += 0.5
    return image.astype(np.float16)


def body_box(image: NDArray[np.float32], threshold_hu: float) -> Box3 | None:
    """Box of the body: largest eroded component above ``threshold_hu``, grown back by one."""
    body = ndimage.binary_erosion(image > _scaled(threshold_hu))
    comp, n = ndimage.label(body)
    if n == 0:
        return None
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    box = bounding_box(comp == int(np.argmax(sizes)))
    assert box is not None
    grown = [
        slice(max(0, s.start - 1), min(size, s.stop + 1))
        for s, size in zip(box, image.shape, strict=True)
    ]
    return (grown[0], grown[1], grown[2])


def cut_sides(
    image: NDArray[np.float32], box: Box3, threshold_hu: float, face_fraction: float
) -> CutSides:
    """Which x/y sides of the image cut through the body (z is cut in every scan, as in the
    original's training crops, and keeps zero padding)."""
    body = image[box] > _scaled(threshold_hu)
    out: list[tuple[bool, bool]] = [(False, False)]
    for axis in (1, 2):
        sides = []
        for side, at_edge in ((0, box[axis].start == 0), (-1, box[axis].stop == image.shape[axis])):
            face = np.take(body, side, axis=axis)
            sides.append(bool(at_edge and face.mean() > face_fraction))
        out.append((sides[0], sides[1]))
    return (out[0], out[1], out[2])


# ----------------------------------------------------------------------------- windows


def _window_starts(n: int, out: int, overlap: float) -> list[int]:
    """Output-window starts along one axis of the body box (relative to the box)."""
    if n <= out:  # centred as the original centres its crop: box centre on segment centre
        return [n // 2 - out // 2]
    stride = max(1, int(out * (1.0 - overlap)))
    k = math.ceil((n - out) / stride) + 1
    return sorted({round(i * (n - out) / (k - 1)) for i in range(k)})


def segments(
    image: NDArray[np.float32], box: Box3, cfg: Liver3mmConfig, cut: CutSides | None = None
) -> Iterator[tuple[tuple[int, int, int], NDArray[np.float32]]]:
    """Network inputs covering ``box``: (output-window start relative to the box, segment in
    the network's RAS ``(x, y, z)`` order). Input voxel ``i`` of a window starting at ``o``
    is box voxel ``o - 13 + i``; outside the box it is zero, or the repeated edge on a
    ``cut`` side."""
    out_zyx = OUTPUT_SEGMENT_XYZ[::-1]
    in_zyx = INPUT_SEGMENT_XYZ[::-1]
    n = [s.stop - s.start for s in box]
    sub = image[box]
    no_cut: CutSides = ((False, False), (False, False), (False, False))
    cut = cut or no_cut
    starts = [_window_starts(n[a], out_zyx[a], cfg.window_overlap) for a in range(3)]
    for o in ((z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]):
        first = [o[a] - OUTPUT_MARGIN for a in range(3)]  # box index of input voxel 0
        src = [slice(max(0, first[a]), min(n[a], first[a] + in_zyx[a])) for a in range(3)]
        dst = [slice(s.start - first[a], s.stop - first[a]) for a, s in enumerate(src)]
        seg = np.zeros(in_zyx, dtype=np.float32)
        seg[tuple(dst)] = sub[tuple(src)]
        for a in (1, 2):
            lo, hi = cut[a]
            view = np.moveaxis(seg, a, 0)  # a view: writes land in seg
            if lo and dst[a].start > 0 and src[a].start == 0:
                view[: dst[a].start] = view[dst[a].start]
            if hi and dst[a].stop < in_zyx[a] and src[a].stop == n[a]:
                view[dst[a].stop :] = view[dst[a].stop - 1]
        yield (o[0], o[1], o[2]), np.ascontiguousarray(seg.transpose(2, 1, 0)[::-1, ::-1, :])


def _from_network(block_xyz: NDArray[np.float32]) -> NDArray[np.float32]:
    """The network's RAS ``(x, y, z)`` → canonical LPS ``(z, y, x)``."""
    return np.ascontiguousarray(block_xyz[::-1, ::-1, :].transpose(2, 1, 0))


def _autocast(device: str, bf16: bool) -> Any:
    """bfloat16 autocast where the hardware runs it natively, else a disabled context."""
    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and native)


def predict_liver_probability(
    network: torch.nn.Module,
    image: NDArray[np.float32],
    box: Box3,
    cfg: Liver3mmConfig,
    device: str,
    cut: CutSides | None = None,
) -> tuple[NDArray[np.float32], int]:
    """Liver probability on the 3 mm grid (zero outside ``box``) and the number of windows."""
    import torch

    out_zyx = OUTPUT_SEGMENT_XYZ[::-1]
    n = [s.stop - s.start for s in box]
    prob_sum = np.zeros(n, dtype=np.float32)
    count = np.zeros(n, dtype=np.float32)
    autocast = _autocast(device, cfg.bf16)
    layout = torch.channels_last_3d if cfg.channels_last else torch.contiguous_format
    network = network.to(memory_format=layout)  # type: ignore[call-overload]
    n_windows = 0
    for o, seg in segments(image, box, cfg, cut):
        x = torch.from_numpy(seg)[None, None].to(device).contiguous(memory_format=layout)
        with torch.inference_mode(), autocast:
            y = network(x)[0, 0].float().cpu().numpy()
        p = _from_network(y)
        src = [slice(max(0, o[a]), min(n[a], o[a] + out_zyx[a])) for a in range(3)]
        dst = [slice(s.start - o[a], s.stop - o[a]) for a, s in enumerate(src)]
        prob_sum[tuple(src)] += p[tuple(dst)]
        count[tuple(src)] += 1.0
        n_windows += 1
    prob = np.zeros(image.shape, dtype=np.float32)
    prob[box] = np.divide(prob_sum, count, out=np.zeros_like(prob_sum), where=count > 0)
    return prob, n_windows


# ----------------------------------------------------------------------------- post-processing


def _largest(mask: NDArray[np.bool_], structure: NDArray[np.bool_]) -> NDArray[np.bool_]:
    comp, n = ndimage.label(mask, structure=structure)
    if n <= 1:
        return mask
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def liver_region(prob: NDArray[np.float32], cfg: Liver3mmConfig) -> NDArray[np.bool_]:
    """Hysteresis on the model grid: the largest confident component grown through p >
    ``threshold`` by at most ``grow_mm``. Empty when no voxel reaches the core threshold."""
    core = prob > cfg.core_threshold
    if not core.any():
        return core
    core = _largest(core, _STRUCT_6)
    steps = round(cfg.grow_mm / MODEL_SPACING_MM[0])
    if steps == 0:
        return core
    return ndimage.binary_dilation(
        core, structure=_STRUCT_6, iterations=steps, mask=prob > cfg.threshold
    )


def native_mask(
    prob: NDArray[np.float32],
    native_shape: Sequence[int],
    native_spacing_mm: Sequence[float],
    threshold: float = 0.5,
) -> NDArray[np.bool_]:
    """``prob`` (3 mm grid) linearly interpolated onto the native grid, above ``threshold``.

    The same as interpolating the whole volume (the voxel-centre convention of
    :mod:`screening.preprocess`), computed only over the native voxels whose interpolation
    reaches a non-zero ``prob`` voxel: the liver's box, a few percent of a chest CT, instead
    of every voxel of it (BENCHMARKS.md "CPU and GPU workers").
    """
    from screening.preprocess import centred_offsets, resample_linear

    out = np.zeros(tuple(native_shape), dtype=bool)
    box = bounding_box(prob > 0)
    if box is None:
        return out
    step = [n / m for n, m in zip(native_spacing_mm, MODEL_SPACING_MM, strict=True)]
    offsets = centred_offsets(step)
    model_box, native_box, local_offsets = [], [], []
    for a in range(3):
        # One zero voxel around the box (or the array edge, which clamps): every native voxel
        # outside the matching native range interpolates zeros only.
        m0, m1 = max(0, box[a].start - 1), min(prob.shape[a], box[a].stop + 1)
        n0 = 0 if m0 == 0 else max(0, math.ceil((m0 - offsets[a]) / step[a]))
        n1 = (
            int(native_shape[a])
            if m1 == prob.shape[a]
            else min(int(native_shape[a]), math.floor((m1 - 1 - offsets[a]) / step[a]) + 1)
        )
        if n1 <= n0:
            return out
        model_box.append(slice(m0, m1))
        native_box.append(slice(n0, n1))
        local_offsets.append(offsets[a] + n0 * step[a] - m0)
    sub = resample_linear(
        prob[tuple(model_box)],
        step,
        [s.stop - s.start for s in native_box],
        offset_zyx=local_offsets,
    )
    out[tuple(native_box)] = sub > threshold
    return out


def cut_scan_circle(ct_hu: NDArray[Any], body_threshold_hu: float) -> NDArray[np.bool_] | None:
    """The padded exterior ``(ny, nx)`` of a scan circle that cuts through the body (some pixel
    on its rim is body on some slice); None when there is none, or the body lies inside."""
    from screening.ingest.volume import HU_MIN

    outside = out_of_field(ct_hu, HU_MIN)
    if outside is None:
        return None
    rim = ndimage.binary_dilation(outside) & ~outside
    return outside if bool((ct_hu[:, rim] > body_threshold_hu).any()) else None


def segment_liver_3mm(
    network: torch.nn.Module,
    ct_hu: NDArray[Any] | None,
    spacing_mm: Sequence[float],
    cfg: Liver3mmConfig,
    *,
    device: str = "cpu",
    prep: Prepared | None = None,
) -> Liver3mmResult:
    """Liver mask (native grid, canonical ``(z, y, x)``) of one CT volume. ``prep`` is what a
    CPU task made of it already (:class:`Liver3mmPrep`); then ``ct_hu`` is not needed (None).
    Both ways go through the same :class:`~screening.preprocess.Prepared`, so the masks are
    the same."""

    t0 = time.perf_counter()
    if prep is None:
        if ct_hu is None:
            raise ValueError("segment_liver_3mm needs the CT or its prep (neither was given)")
        prep = cfg.prep_spec().prepare(ct_hu, spacing_mm, threads=None)
    outside = exterior_from_json(prep.ct_notes.get(SCAN_CIRCLE_NOTE))
    native_shape = prep.ct_shape
    image = prep.image.astype(np.float32)
    image -= 0.5
    box = body_box(image, cfg.body_threshold_hu)
    t1 = time.perf_counter()
    seconds = {"preprocess_s": t1 - t0}
    if box is None:  # nothing but air: no body, no liver
        return Liver3mmResult(np.zeros(native_shape, dtype=bool), seconds, device)
    cut = cut_sides(image, box, cfg.body_threshold_hu, cfg.cut_face_fraction)
    prob, n_windows = predict_liver_probability(network, image, box, cfg, device, cut)
    t2 = time.perf_counter()
    prob *= liver_region(prob, cfg)
    liver = native_mask(prob, native_shape, spacing_mm, cfg.threshold)
    if outside is not None:  # nothing was imaged there
        liver[:, outside] = False
    liver_box = bounding_box(liver)
    if liver_box is not None:
        liver[liver_box] = _largest(liver[liver_box], np.ones((3, 3, 3), dtype=bool))
    t3 = time.perf_counter()
    seconds.update(inference_s=t2 - t1, postprocess_s=t3 - t2)
    box_out = tuple((s.start, s.stop) for s in box)
    return Liver3mmResult(liver, seconds, device, n_windows, box_out, cut, outside is not None)
