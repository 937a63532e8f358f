"""Shared fixtures: real CT fixtures (skipped with a message when absent) and small phantoms."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from screening.runtime import ClusterConfig
from screening.synthetic import PhantomSpec, ScanGeometry, make_phantom
from screening.synthetic.phantom import Phantom

# Property tests draw the same examples on every run, so CI cannot fail by chance; set
# HYPOTHESIS_PROFILE=explore to search new random examples while developing.
settings.register_profile("repeatable", derandomize=True, deadline=None)  # noisy shared CPU
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO = Path(__file__).resolve().parent.parent
REAL_DATA = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of the read-only real CT fixtures; skips the test when the folder is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT fixtures not found at {REAL_DATA} (only on the project machines)")
    return REAL_DATA


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterConfig]:
    """A one-worker local Dask cluster (processes) shared by one test module's ingests."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as lc:
        yield ClusterConfig(scheduler=lc.scheduler_address)


@pytest.fixture(scope="session")
def small_phantom() -> Phantom:
    return make_phantom(PhantomSpec(padding_hu=-2000.0), ScanGeometry.preset("small"), seed=11)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A factory of real, tiny filesystems (tmpfs of ``size_kb``) for disk-full tests; skips
    when this process may not mount (needs root with CAP_SYS_ADMIN, as on the project machines)."""
    import subprocess

    mounted: list[Path] = []

    def make(size_kb: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(point)],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)
