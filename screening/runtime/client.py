"""Where tasks run: :func:`open_client` picks the embedded LocalCluster, an existing Dask
scheduler or a deployment file, so pointing a stage at a real cluster is one option, never a
code change."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from screening.runtime.cluster import ClusterConfig, open_local_client
from screening.runtime.deploy import open_cluster_file

__all__ = ["open_client"]

log = logging.getLogger(__name__)


@contextmanager
def open_client(cfg: ClusterConfig) -> Iterator[Any]:
    """A connected ``distributed.Client``; whatever was started for it closes on exit."""
    if cfg.cluster_file:
        with open_cluster_file(cfg.cluster_file) as client:
            yield client
        return
    if cfg.scheduler:
        from distributed import Client

        client = Client(cfg.scheduler)
        log.info("connected to scheduler %s; dashboard: %s", cfg.scheduler, client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return
    with open_local_client(cfg) as client:
        yield client
