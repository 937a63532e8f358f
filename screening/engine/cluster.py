"""Where tasks run: the embedded LocalCluster or an existing Dask scheduler.

Every stage (ingest now; preprocess, segment, measure later) goes through :func:`open_client`,
so pointing a run at a real cluster is one option, never a code change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from screening.config import FrozenConfig, require

__all__ = ["ClusterConfig", "open_client"]

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
    """

    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: bool = True

    def __post_init__(self) -> None:
        require(
            self.workers is None or self.workers >= 1,
            f"workers must be >= 1, got {self.workers}",
        )
        require(self.threads_per_worker >= 1, "threads_per_worker must be >= 1")

    def n_local_workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)


@contextmanager
def open_client(cfg: ClusterConfig) -> Iterator[Any]:
    """A connected ``distributed.Client``; the local cluster (if any) closes on exit."""
    from distributed import Client, LocalCluster

    if cfg.scheduler:
        client = Client(cfg.scheduler)
        log.info("connected to scheduler %s", cfg.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = LocalCluster(
        n_workers=cfg.n_local_workers(),
        threads_per_worker=cfg.threads_per_worker,
        processes=True,
        memory_limit=cfg.memory_limit,
        dashboard_address=":0" if cfg.dashboard else None,
        silence_logs=logging.WARNING,
    )
    client = Client(cluster)
    if cfg.dashboard:
        log.info("Dask dashboard: %s", client.dashboard_link)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def worker_count(client: Any) -> int:
    """Workers currently connected (at least 1, for sizing in-flight limits)."""
    return max(1, len(client.scheduler_info().get("workers", {})))
