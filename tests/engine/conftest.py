"""Scan stores for engine tests: phantoms written straight into a store with catalog rows
(ingest is tested on its own), plus a real local Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import cloudpickle
import dask
import pytest

from screening._version import __version__
from screening.ingest.catalog import CatalogWriter
from screening.ingest.store import StoreConfig, write_scan_store
from screening.ingest.volume import ScanVolume
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from tests.engine import segmenters

# Workers cannot import the tests package: ship the test segmenters by value.
cloudpickle.register_pickle_by_value(segmenters)


EYE = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def write_phantom_store(
    root: Path, n: int, *, seed: int = 0, poison: int | None = None, sites: int = 2
) -> list[str]:
    """``n`` small phantoms (liver 20-65 HU, truth masks as seg_reference) as complete stores
    with ``ok`` catalog rows; scan ``poison`` gets segmenters.POISON_HU in its first voxel."""
    writer = CatalogWriter(root)
    ids = []
    for i in range(n):
        liver_hu = 20.0 + (45.0 * i) / max(1, n - 1)
        ph = make_phantom(PhantomSpec(liver_hu=liver_hu), ScanGeometry.preset("small"), seed + i)
        hu = ph.hu.copy()
        if i == poison:
            hu.flat[0] = segmenters.POISON_HU
        volume = ScanVolume(hu, ph.spacing_mm, ph.origin_mm, EYE, {"format": "synthetic"})
        scan_id = f"s{seed:03d}x{i:04d}"
        attrs = {"scan_id": scan_id, "cohort": "test", "site": f"site-{i % sites}"}
        write_scan_store(root, scan_id, volume, attrs, StoreConfig(), ph.labels)
        writer.add(
            {
                "scan_id": scan_id,
                "cohort": "test",
                "site": f"site-{i % sites}",
                "status": "ok",
                "engine_version": __version__,
                "ingested_at": datetime.now(UTC),
            }
        )
        ids.append(scan_id)
    writer.flush()
    return ids


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """Address of a real two-worker LocalCluster (processes) with allowed-failures = 1, so a
    poison scan is given up after one worker death instead of three."""
    from distributed import LocalCluster

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as lc,
    ):
        yield lc.scheduler_address
