"""Scan stores for engine tests: phantoms written straight into a store with catalog rows
(ingest is tested on its own), plus a real local Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cloudpickle
import dask
import pytest

from screening.synthetic.stores import write_phantom_stores
from tests.pipeline import segmenters

# Workers cannot import the tests package: ship the test segmenters by value.
cloudpickle.register_pickle_by_value(segmenters)


def write_phantom_store(
    root: Path, n: int, *, seed: int = 0, poison: int | None = None, sites: int = 2
) -> list[str]:
    """``n`` small phantoms as complete stores with ``ok`` catalog rows (liver 20-65 HU);
    scan ``poison`` carries segmenters.POISON_HU in its first voxel."""
    marker = {poison: segmenters.POISON_HU} if poison is not None else None
    return write_phantom_stores(root, n, seed=seed, n_sites=sites, first_voxel_hu=marker)


@contextmanager
def fresh_cluster() -> Iterator[str]:
    """Address of a new two-worker LocalCluster (processes) with allowed-failures = 1, so a
    poison scan is given up after one worker death instead of three. Tests that kill workers
    each take their own and never wait for a nanny to bring a killed worker back (that wait
    could hang: `Only 1/2 workers arrived`), so no test inherits another's dead workers."""
    from distributed import LocalCluster

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as lc,
    ):
        yield lc.scheduler_address


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A cluster shared by the module's tests that kill no worker."""
    with fresh_cluster() as address:
        yield address
