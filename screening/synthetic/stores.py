"""Phantoms written straight into a scan store with ``ok`` catalog rows, skipping DICOM/NIfTI
and ingest: a fast way to a store of known truth for engine tests and benchmarks (ingest
itself is exercised by ``screening synth`` + ``screening ingest``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from screening._version import __version__
from screening.config import require
from screening.store.catalog import CatalogWriter
from screening.store.scan import StoreConfig, write_scan_store
from screening.store.volume import ScanVolume
from screening.synthetic.phantom import PhantomSpec, ScanGeometry, make_phantom

__all__ = ["box_segmentation", "write_phantom_stores"]

_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def write_phantom_stores(
    store_root: str | os.PathLike[str],
    n: int,
    *,
    seed: int = 0,
    size: Literal["small", "full"] = "small",
    cohort: str = "test",
    n_sites: int = 2,
    liver_hu_range: tuple[float, float] = (20.0, 65.0),
    first_voxel_hu: Mapping[int, int] | None = None,
) -> list[str]:
    """Write ``n`` phantoms (liver HU evenly over ``liver_hu_range``, truth masks as
    ``seg_reference``, sites round robin) as complete scan stores; return their scan_ids.

    ``first_voxel_hu`` sets voxel (0, 0, 0) of chosen scans (by index): a marker a test's
    segmentation function can recognise (e.g. to crash on purpose).
    """
    require(n >= 1, f"n must be >= 1, got {n}")
    root = Path(store_root)
    writer = CatalogWriter(root)
    lo, hi = liver_hu_range
    ids = []
    for i in range(n):
        liver_hu = lo + (hi - lo) * i / max(1, n - 1)
        ph = make_phantom(PhantomSpec(liver_hu=liver_hu), ScanGeometry.preset(size), seed + i)
        hu = ph.hu
        if first_voxel_hu and i in first_voxel_hu:
            hu = hu.copy()
            hu.flat[0] = first_voxel_hu[i]
        volume = ScanVolume(
            hu, ph.spacing_mm, ph.origin_mm, _IDENTITY, {"format": "synthetic", "synthetic": True}
        )
        scan_id = f"p{seed:04d}x{i:05d}"
        site = f"site-{i % n_sites}"
        write_scan_store(
            root,
            scan_id,
            volume,
            {"scan_id": scan_id, "cohort": cohort, "site": site},
            StoreConfig(),
            ph.labels,
        )
        writer.add(
            {
                "scan_id": scan_id,
                "cohort": cohort,
                "site": site,
                "status": "ok",
                "n_slices": int(hu.shape[0]),
                "engine_version": __version__,
                "ingested_at": datetime.now(UTC),
            }
        )
        ids.append(scan_id)
    writer.flush()
    return ids


def box_segmentation(
    ct_hu: NDArray[np.int16], spacing_mm: tuple[float, float, float]
) -> NDArray[np.uint8]:
    """A trivial segmenter for engine benchmarks and tests: fixed boxes in the patient's right
    (liver, 1) and left (spleen, 2) upper abdomen. Anatomically meaningless, nearly free."""
    labels = np.zeros(ct_hu.shape, dtype=np.uint8)
    nz, ny, nx = ct_hu.shape
    labels[nz // 4 : nz // 2, ny // 3 : 2 * ny // 3, nx // 5 : nx // 2] = 1
    labels[nz // 4 : nz // 2, ny // 3 : ny // 2, 3 * nx // 4 : 7 * nx // 8] = 2
    return labels
