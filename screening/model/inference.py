"""Sliding-window segmentation on the model grid, mapped back to the native ``ct`` grid.

Pipeline for one scan (:func:`segment_volume`):

1. optional **cascade**: the coarse model segments a low-resolution copy; the bounding box of
   its liver and spleen (plus a margin) is the only region the fine model looks at;
2. preprocessed input (``prep``, on the fine model's grid) → MONAI ``sliding_window_inference``
   with Gaussian blending and a batch of windows, under ``torch.no_grad``; on CUDA with bf16
   autocast and channels-last memory;
3. class probabilities interpolated linearly back onto the native grid (smoother boundaries than
   nearest-neighbour on the coarser model grid), arg-max, and the largest connected component
   per organ (``scipy.ndimage.label``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from screening.config import FrozenConfig, require
from screening.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from screening.model.checkpoint import LoadedModel

__all__ = [
    "InferenceConfig",
    "SegmentationResult",
    "dice_per_label",
    "keep_largest_component",
    "predict_probabilities",
    "probs_to_native",
    "resolve_device",
    "segment_volume",
    "torch_threads",
]

log = logging.getLogger(__name__)

DeviceName = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class InferenceConfig(FrozenConfig):
    """How the network is applied. ``roi_size_zyx`` None uses the model card's training patch.

    Parameters
    ----------
    overlap
        Fraction of each window shared with its neighbour.
    sw_batch_size
        Windows per forward pass.
    cascade
        Run the coarse model first and the fine model only inside its organ bounding box, when
        the model has a ``coarse/`` sub-model (a model without one runs without, and its
        backend records the cascade as off). On by default everywhere (``run``, ``screen``,
        ``segment``): same Dice on the benchmark cohort, 2.5x faster (BENCHMARKS.md).
    cascade_margin_mm
        Margin added around the coarse box on every side.
    bf16, channels_last
        Used on CUDA only (CPU inference stays float32, contiguous).
    largest_component
        Keep the largest connected component of each organ.
    """

    roi_size_zyx: tuple[int, int, int] | None = None
    overlap: float = 0.25
    sw_batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    cascade: bool = True
    cascade_margin_mm: float = 30.0
    bf16: bool = True
    channels_last: bool = True
    largest_component: bool = True

    def __post_init__(self) -> None:
        require(0.0 <= self.overlap < 1.0, f"overlap must be in [0, 1), got {self.overlap}")
        require(self.sw_batch_size >= 1, f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        require(self.cascade_margin_mm >= 0, "cascade_margin_mm must be >= 0")
        if self.roi_size_zyx is not None:
            require(
                len(self.roi_size_zyx) == 3 and min(self.roi_size_zyx) >= 1,
                f"roi_size_zyx must be three positive ints, got {self.roi_size_zyx}",
            )


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU thread count set to ``threads`` (None: unchanged) inside, restored after:
    a Dask worker gives each task its own thread budget."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def need_ct(ct_hu: NDArray[np.int16] | None) -> NDArray[np.int16]:
    """The CT, for a backend that reads it itself: only a model whose preprocessing
    :attr:`~screening.preprocess.PrepSpec.replaces_ct` may be given a prep alone."""
    if ct_hu is None:
        raise ValueError(
            "this backend reads the CT itself: give ct_hu (only a model whose PrepSpec "
            "replaces_ct runs on its prep alone)"
        )
    return ct_hu


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; a forced ``cuda`` must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was requested but torch sees no CUDA GPU")
    require(device == "cpu" or device.startswith("cuda"), f"unknown device {device!r}")
    return device


@dataclass
class SegmentationResult:
    """Labels on the native grid plus what it took to get them."""

    labels: NDArray[np.uint8]
    seconds: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    box_zyx: tuple[tuple[int, int], ...] | None = None  # native-grid box the fine pass covered


def _roi_size(model: LoadedModel, cfg: InferenceConfig) -> tuple[int, int, int]:
    if cfg.roi_size_zyx is not None:
        roi = cfg.roi_size_zyx
    else:
        patch = model.card.get("inference", {}).get("roi_size_zyx") or (32, 96, 96)
        roi = (int(patch[0]), int(patch[1]), int(patch[2]))
    div = model.network_cfg.size_divisor
    return (
        max(div, roi[0] // div * div),
        max(div, roi[1] // div * div),
        max(div, roi[2] // div * div),
    )


def predict_probabilities(
    network: torch.nn.Module,
    prep: NDArray[Any],
    roi_size_zyx: Sequence[int],
    cfg: InferenceConfig,
    device: str,
) -> NDArray[np.float32]:
    """Class probabilities (C, z, y, x) of a preprocessed volume on the network's grid."""
    import torch
    from monai.inferers import sliding_window_inference

    cuda = device.startswith("cuda")
    x = torch.from_numpy(np.ascontiguousarray(prep, dtype=np.float32))[None, None].to(device)
    if cuda and cfg.channels_last:
        network = network.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last_3d)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16)
    with torch.no_grad(), autocast:
        logits = sliding_window_inference(
            x,
            roi_size=tuple(int(r) for r in roi_size_zyx),
            sw_batch_size=cfg.sw_batch_size,
            predictor=network,
            overlap=cfg.overlap,
            mode=cfg.blend,
        )
        assert isinstance(logits, torch.Tensor)
        probs = torch.softmax(logits.float(), dim=1)[0]
    out: NDArray[np.float32] = probs.cpu().numpy()
    return out


def keep_largest_component(labels: NDArray[np.uint8], label_values: Sequence[int] = (1, 2)) -> None:
    """Keep only the largest 26-connected component of each label, in place.

    Components are labelled inside each organ's bounding box only: on a full-size scan that is
    a fraction of the volume, in time and in memory (the int32 component image).
    """
    from screening.masks import bounding_box, largest_component

    for value in label_values:
        mask = labels == value
        box = bounding_box(mask)
        del mask
        if box is None:
            continue
        view = labels[box]
        sub = view == value
        kept, n = largest_component(sub)
        if n > 1:
            view[sub & ~kept] = 0


def dice_per_label(
    pred: NDArray[np.integer[Any]],
    truth: NDArray[np.integer[Any]],
    label_values: Sequence[int] = (1, 2),
) -> dict[int, float]:
    """Dice coefficient per label (1.0 when both are empty)."""
    out = {}
    for v in label_values:
        p, t = pred == v, truth == v
        denom = int(p.sum()) + int(t.sum())
        out[v] = 1.0 if denom == 0 else 2.0 * float(np.logical_and(p, t).sum()) / denom
    return out


def probs_to_native(
    probs: NDArray[np.float32],
    model_spacing_mm: Sequence[float],
    native_shape: Sequence[int],
    native_spacing_mm: Sequence[float],
    *,
    offset_zyx: Sequence[float] | None = None,
    slab_voxels: int = 1 << 20,
) -> NDArray[np.uint8]:
    """Interpolate probabilities onto the native grid (slab by slab) and take the arg-max.

    ``offset_zyx`` is the model-grid index of native voxel 0; None: the two grids cover the
    same extent (the voxel-centre convention of :mod:`screening.preprocess`).
    """
    from screening.preprocess import centred_offsets, resample_linear

    step = [n / m for n, m in zip(native_spacing_mm, model_spacing_mm, strict=True)]
    if offset_zyx is None:
        offset_zyx = centred_offsets(step)
    labels = np.empty(tuple(native_shape), dtype=np.uint8)
    nz = labels.shape[0]
    slab = max(1, slab_voxels // max(1, labels.shape[1] * labels.shape[2]))
    for z0 in range(0, nz, slab):
        z1 = min(nz, z0 + slab)
        # The slab's output positions start at model index offset + z0 * step; take the source
        # rows they need.
        start = offset_zyx[0] + z0 * step[0]
        lo = min(max(0, int(np.floor(start))), probs.shape[1] - 1)
        hi = min(probs.shape[1], int(np.ceil(offset_zyx[0] + (z1 - 1) * step[0])) + 2)
        part = probs[:, lo : max(hi, lo + 1)]
        sub = resample_linear(
            part,
            step,
            (z1 - z0, *labels.shape[1:]),
            offset_zyx=(start - lo, offset_zyx[1], offset_zyx[2]),
        )
        labels[z0:z1] = np.argmax(sub, axis=0)
    return labels


def _coarse_box(
    model: LoadedModel,
    ct_hu: NDArray[np.int16],
    spacing_mm: Sequence[float],
    cfg: InferenceConfig,
    device: str,
) -> tuple[slice, slice, slice] | None:
    """Native-grid box (with margin) around the coarse model's liver and spleen; None if empty."""
    from screening.preprocess import preprocess_volume

    coarse = model.coarse
    if coarse is None:
        raise ConfigError(
            f"cascade requested but the model at {model.path} has no coarse/ sub-model"
        )
    prep = preprocess_volume(ct_hu, spacing_mm, coarse.preprocess_cfg)
    probs = predict_probabilities(
        coarse.network, prep, _roi_size(coarse, InferenceConfig()), cfg, device
    )
    fg = np.argmax(probs, axis=0) > 0
    if not fg.any():
        return None
    box = []
    for axis, (n_native, s_native, s_coarse) in enumerate(
        zip(ct_hu.shape, spacing_mm, coarse.preprocess_cfg.spacing_mm, strict=True)
    ):
        idx = np.nonzero(fg.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        # Coarse voxel k's centre lies at native mm (k + 0.5) * s_coarse - s_native / 2.
        lo_mm = (idx[0] + 0.5) * s_coarse - s_native / 2 - cfg.cascade_margin_mm
        hi_mm = (idx[-1] + 0.5) * s_coarse - s_native / 2 + cfg.cascade_margin_mm
        lo = max(0, int(np.floor(lo_mm / s_native)))
        hi = min(n_native, int(np.ceil(hi_mm / s_native)) + 1)
        box.append(slice(lo, hi))
    return (box[0], box[1], box[2])


def segment_volume(
    model: LoadedModel,
    ct_hu: NDArray[np.int16],
    spacing_mm: Sequence[float],
    cfg: InferenceConfig,
    *,
    device: str = "auto",
    threads: int | None = None,
    prep: NDArray[Any] | None = None,
) -> SegmentationResult:
    """Segment one native CT volume (z, y, x HU) into 0/1/2 labels on the same grid.

    ``prep`` is the whole volume already preprocessed for this model (the scan store's
    ``prep``, written by a CPU task); without it the CT (or the cascade's box of it) is
    preprocessed here.
    """

    from screening.preprocess import preprocess_volume

    dev = resolve_device(device)
    with torch_threads(threads):
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        box = None
        cascade = cfg.cascade and model.coarse is not None
        if cascade:
            box = _coarse_box(model, ct_hu, spacing_mm, cfg, dev)
            seconds["cascade_s"] = time.perf_counter() - t0
        labels = np.zeros(ct_hu.shape, dtype=np.uint8)
        if box is None and cascade:  # the coarse pass found nothing: look everywhere
            log.debug("cascade: coarse model found no organ; running the fine model everywhere")
        region = box or (
            slice(0, ct_hu.shape[0]),
            slice(0, ct_hu.shape[1]),
            slice(0, ct_hu.shape[2]),
        )
        model_sp = model.preprocess_cfg.spacing_mm
        t1 = time.perf_counter()
        offset: tuple[float, ...] | None = None
        if prep is None:
            image = preprocess_volume(ct_hu[region], spacing_mm, model.preprocess_cfg)
        else:
            # Crop the model-grid box that covers the native region (with a voxel to spare);
            # native voxel j sits at model index (j + 0.5) * n / m - 0.5.
            at = [
                ((r.start + 0.5) * n / m - 0.5, (r.stop - 0.5) * n / m - 0.5)
                for r, n, m in zip(region, spacing_mm, model_sp, strict=True)
            ]
            starts = [max(0, int(np.floor(lo))) for lo, _ in at]
            stops = [int(np.ceil(hi)) + 2 for _, hi in at]
            image = prep[tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))]
            offset = tuple(lo - a for (lo, _), a in zip(at, starts, strict=True))
        t2 = time.perf_counter()
        probs = predict_probabilities(model.network, image, _roi_size(model, cfg), cfg, dev)
        t3 = time.perf_counter()
        native_shape = tuple(r.stop - r.start for r in region)
        labels[region] = probs_to_native(
            probs, model_sp, native_shape, spacing_mm, offset_zyx=offset
        )
        if cfg.largest_component:
            keep_largest_component(labels)
        t4 = time.perf_counter()
        seconds.update(preprocess_s=t2 - t1, inference_s=t3 - t2, postprocess_s=t4 - t3)
        box_out = None if box is None else tuple((s.start, s.stop) for s in box)
        return SegmentationResult(labels, seconds, dev, box_out)
