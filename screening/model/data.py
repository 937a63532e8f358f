"""Training data: labelled scans on the model grid, and foreground-weighted patch sampling."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from screening.errors import InputError
from screening.preprocess import (
    PreprocessConfig,
    grid_shape,
    preprocess_volume,
    resample_labels_nearest,
)
from screening.store.scan import is_complete, open_scan_store

if TYPE_CHECKING:
    import torch

__all__ = [
    "LabelledScan",
    "PatchSampler",
    "labelled_store_paths",
    "load_labelled_scan",
    "split_train_val",
]

log = logging.getLogger(__name__)

_FG_SAMPLES_PER_LABEL = 20_000  # candidate patch centres kept per organ and scan


@dataclass(frozen=True, eq=False)
class LabelledScan:
    """One scan on the model grid: ``image`` float16 in [0, 1], ``labels`` uint8 0/1/2."""

    scan_id: str
    image: NDArray[np.float16]
    labels: NDArray[np.uint8]
    fg_index: dict[int, NDArray[np.int32]]  # label → (n, 3) voxel indices (subsampled)


def _source_name(store_path: Path) -> str:
    """The scan's source path as the user named it (independent of the pseudonymisation key)."""
    import json

    meta = json.loads((store_path / "zarr.json").read_text())
    scan = meta.get("attributes", {}).get("scan", {})
    return str(scan.get("source_path") or store_path.name)


def labelled_store_paths(store_root: str | os.PathLike[str]) -> list[Path]:
    """Complete scan stores under ``STORE/scans`` that carry a ``seg_reference``.

    Ordered by source path, not by scan id: scan ids depend on the pseudonymisation key, and
    training must not (the same data under another key gives the same run).
    """
    root = Path(store_root) / "scans"
    found = [
        p
        for p in root.glob("*.zarr")
        if is_complete(p) and (p / "seg_reference" / "zarr.json").is_file()
    ]
    return sorted(found, key=lambda p: (_source_name(p), p.name))


def load_labelled_scan(
    store_path: str | os.PathLike[str], cfg: PreprocessConfig, rng: np.random.Generator
) -> LabelledScan:
    """Read ``ct`` and ``seg_reference``, bring both to the model grid (linear / nearest)."""
    store = open_scan_store(store_path)
    ct, ref = store.read("ct"), store.read("seg_reference")
    if ref.shape != ct.shape:
        raise InputError(
            f"seg_reference {ref.shape} is not on the ct grid {ct.shape}", path=store.path
        )
    image = preprocess_volume(ct, store.spacing_mm, cfg)
    step = [t / s for s, t in zip(store.spacing_mm, cfg.spacing_mm, strict=True)]
    labels = resample_labels_nearest(
        ref, step, grid_shape(ct.shape, store.spacing_mm, cfg.spacing_mm)
    )
    fg: dict[int, NDArray[np.int32]] = {}
    for value in (1, 2):
        idx = np.argwhere(labels == value).astype(np.int32)
        if len(idx) > _FG_SAMPLES_PER_LABEL:
            idx = idx[rng.choice(len(idx), _FG_SAMPLES_PER_LABEL, replace=False)]
        fg[value] = idx
    scan_id = store.path.name.removesuffix(".zarr")
    return LabelledScan(scan_id, image, labels.astype(np.uint8), fg)


def split_train_val(paths: Sequence[Path], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic split by a hash of each scan's source path (stable as the cohort grows)."""
    if len(paths) < 2:
        raise InputError(
            f"training needs at least 2 labelled scans (one for validation), found {len(paths)}"
        )

    def bucket(p: Path) -> float:
        name = _source_name(p) if (p / "zarr.json").is_file() else p.name
        h = hashlib.sha256(name.encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    val = [p for p in paths if bucket(p) < val_fraction]
    if not val:
        val = [min(paths, key=bucket)]
    train = [p for p in paths if p not in val]
    return train, val


class PatchSampler:
    """Random training patches: a share centred on liver or spleen voxels, the rest anywhere.

    Intensity augmentation (scale, shift, Gaussian noise) only: no flips, since anatomy is
    lateralised (the liver is on the patient's right) and the canonical orientation is fixed.
    """

    def __init__(
        self,
        scans: Sequence[LabelledScan],
        patch_zyx: Sequence[int],
        *,
        fg_fraction: float,
        intensity_scale: float,
        intensity_shift: float,
        noise_sd: float,
        rng: np.random.Generator,
    ) -> None:
        self.scans = list(scans)
        self.patch = tuple(int(p) for p in patch_zyx)
        self.fg_fraction = fg_fraction
        self.intensity_scale = intensity_scale
        self.intensity_shift = intensity_shift
        self.noise_sd = noise_sd
        self.rng = rng

    def _corner(self, scan: LabelledScan) -> tuple[int, int, int]:
        shape = scan.image.shape
        rng = self.rng
        organs = [v for v, idx in scan.fg_index.items() if len(idx)]
        if organs and rng.random() < self.fg_fraction:
            idx = scan.fg_index[organs[int(rng.integers(len(organs)))]]
            centre = idx[int(rng.integers(len(idx)))]
            corner = [
                int(c) - p // 2 + int(rng.integers(-p // 4, p // 4 + 1))
                for c, p in zip(centre, self.patch, strict=True)
            ]
        else:
            corner = [
                int(rng.integers(0, max(1, n - p + 1)))
                for n, p in zip(shape, self.patch, strict=True)
            ]
        return (corner[0], corner[1], corner[2])

    def _crop(self, arr: NDArray[Any], corner: Sequence[int], fill: float) -> NDArray[Any]:
        """``arr[corner : corner + patch]``, padded with ``fill`` where it leaves the volume."""
        out = np.full(self.patch, fill, dtype=arr.dtype)
        src, dst = [], []
        for c, p, n in zip(corner, self.patch, arr.shape, strict=True):
            lo, hi = max(c, 0), min(c + p, n)
            src.append(slice(lo, max(lo, hi)))
            dst.append(slice(lo - c, lo - c + max(0, hi - lo)))
        out[tuple(dst)] = arr[tuple(src)]
        return out

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 1, z, y, x) float32, labels (B, 1, z, y, x) int64)."""
        import torch

        images, labels = [], []
        for _ in range(batch_size):
            scan = self.scans[int(self.rng.integers(len(self.scans)))]
            corner = self._corner(scan)
            img = self._crop(scan.image, corner, 0.0).astype(np.float32)
            lab = self._crop(scan.labels, corner, 0)
            scale = 1.0 + self.rng.uniform(-self.intensity_scale, self.intensity_scale)
            shift = self.rng.uniform(-self.intensity_shift, self.intensity_shift)
            img = img * scale + shift
            if self.noise_sd > 0:
                img += self.rng.normal(0.0, self.rng.uniform(0, self.noise_sd), img.shape).astype(
                    np.float32
                )
            images.append(img)
            labels.append(lab)
        x = torch.from_numpy(np.stack(images)[:, None])
        y = torch.from_numpy(np.stack(labels)[:, None].astype(np.int64))
        return x, y


def iter_loaded(
    paths: Iterable[Path], cfg: PreprocessConfig, rng: np.random.Generator
) -> list[LabelledScan]:
    return [load_labelled_scan(p, cfg, rng) for p in paths]
