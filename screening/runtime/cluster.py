"""The embedded cluster: :class:`ClusterConfig` (also ``kind: local`` of a deployment file),
the LocalCluster it describes (with GPU workers), and worker counts."""

from __future__ import annotations

import copy
import glob
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import dask

from screening.config import FrozenConfig, require

__all__ = ["ClusterConfig", "gpu_worker_count", "open_local_client", "worker_count"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ClusterConfig(FrozenConfig):
    """How to get Dask workers.

    Parameters
    ----------
    scheduler
        Address of an existing scheduler (``tcp://host:8786``, ``tls://...``); when set, no
        local cluster is started and ``workers`` is ignored.
    workers
        Worker processes of the embedded LocalCluster; ``None`` means one per CPU core.
    threads_per_worker
        Threads per worker process. One keeps numpy/zarr from oversubscribing the cores.
    memory_limit
        Per-worker memory limit of the local cluster (Dask syntax, e.g. ``"4GiB"``, or
        ``"auto"`` for an even share of the machine).
    dashboard
        Start the local cluster's dashboard (on a free port).
    gpu_workers
        Extra local workers tagged ``resources={"GPU": 1}``, each seeing one GPU
        (``CUDA_VISIBLE_DEVICES``); ``None`` means one per GPU torch can see, 0 none.
    malloc_threshold_mib
        glibc's trim and mmap thresholds in the local workers (``None`` keeps Dask's
        ``MALLOC_TRIM_THRESHOLD_=65536``). Dask's small trim threshold also switches off
        glibc's dynamic mmap threshold, so every large temporary of the U-Net and resampling
        is mapped and faulted in afresh: measured 1.5x slower segmentation
        (bench/bench_run.py). 256 MiB keeps those buffers in the heap; the cost is that up to
        that much freed memory per worker is returned to the OS later.
    cluster_file
        A deployment file (``cluster/*.yaml``: local, SLURM, Kubernetes, an existing
        scheduler with TLS); when set it decides everything else.
    """

    #: Its ``kind`` in a deployment file (``cluster/local.yaml``).
    kind: ClassVar[str] = "local"

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: bool = True
    gpu_workers: int | None = None
    cluster_file: str | None = None
    malloc_threshold_mib: int | None = 256

    def __post_init__(self) -> None:
        require(
            self.workers is None or self.workers >= 1,
            f"workers must be >= 1, got {self.workers}",
        )
        require(self.threads_per_worker >= 1, "threads_per_worker must be >= 1")
        require(
            self.malloc_threshold_mib is None or self.malloc_threshold_mib >= 0,
            "malloc_threshold_mib must be >= 0 (or None)",
        )
        require(
            self.gpu_workers is None or self.gpu_workers >= 0,
            f"gpu_workers must be >= 0, got {self.gpu_workers}",
        )

    def n_local_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def n_gpu_workers(self) -> int:
        if self.gpu_workers is not None:
            return self.gpu_workers
        return visible_gpu_count()


def worker_environ(cfg: ClusterConfig) -> dict[str, Any]:
    """Environment set before each local worker process starts (Dask's, plus malloc)."""
    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    if cfg.malloc_threshold_mib is not None:
        threshold = str(cfg.malloc_threshold_mib << 20)
        env.update(MALLOC_TRIM_THRESHOLD_=threshold, MALLOC_MMAP_THRESHOLD_=threshold)
    return env


def visible_gpu_count() -> int:
    """GPUs torch can see here (0 without torch or CUDA). On Linux without an NVIDIA device
    node there is no CUDA GPU, and torch (3 s to import) is not asked."""
    if sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _add_gpu_workers(cluster: Any, n_gpu: int) -> None:
    """Add ``n_gpu`` workers to a LocalCluster, each pinned to one GPU and tagged GPU=1."""
    for i in range(n_gpu):
        spec = copy.deepcopy(cluster.new_spec)
        spec["options"]["resources"] = {"GPU": 1}
        spec["options"]["env"] = {"CUDA_VISIBLE_DEVICES": str(i)}
        cluster.worker_spec[f"gpu-{i}"] = spec
    if n_gpu:
        cluster.sync(cluster._correct_state)


@contextmanager
def open_local_client(cfg: ClusterConfig) -> Iterator[Any]:
    """A client of a new LocalCluster described by ``cfg``; the cluster closes on exit."""
    from distributed import Client, LocalCluster

    n_gpu = cfg.n_gpu_workers()
    # Read by each Nanny when it is created (and reused when it restarts its worker).
    with dask.config.set({"distributed.nanny.pre-spawn-environ": worker_environ(cfg)}):
        cluster = LocalCluster(
            n_workers=cfg.n_local_workers(),
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=":0" if cfg.dashboard else None,
            silence_logs=logging.WARNING,
        )
        _add_gpu_workers(cluster, n_gpu)
    client = Client(cluster)
    if n_gpu:
        client.wait_for_workers(cfg.n_local_workers() + n_gpu, timeout=120)
        log.info("%d GPU worker(s) added", n_gpu)
    if cfg.dashboard:
        log.info("Dask dashboard: %s", client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def gpu_worker_count(client: Any) -> int:
    """Connected workers that declare a ``GPU`` resource."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
    return sum(1 for w in workers if w.get("resources", {}).get("GPU", 0) >= 1)


def worker_count(client: Any) -> int:
    """Workers currently connected (at least 1, for sizing in-flight limits)."""
    return max(1, len(client.scheduler_info().get("workers", {})))
