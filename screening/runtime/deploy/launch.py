"""Open a deployment file: build the cluster its ``kind`` describes and yield a client."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from screening.runtime.cluster import ClusterConfig, open_local_client
from screening.runtime.deploy.kubernetes import start_kubernetes
from screening.runtime.deploy.slurm import close_slurm, start_slurm
from screening.runtime.deploy.specs import (
    GPU_RESOURCE,
    SchedulerSpec,
    SlurmSpec,
    check_tls_files,
    load_cluster_file,
    security_for,
)

__all__ = ["open_cluster_file"]

log = logging.getLogger(__name__)


def _wait_for_workers(client: Any, *, cpu: bool, gpu: bool, timeout_s: float) -> None:
    """Wait until at least one CPU and one GPU worker (those asked for) have joined."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
        n_gpu = sum(1 for w in workers if w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1)
        missing = [
            kind
            for kind, wanted, have in (("CPU", cpu, len(workers) - n_gpu), ("GPU", gpu, n_gpu))
            if wanted and have == 0
        ]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no {' or '.join(missing)} worker joined within {timeout_s:g} s; the jobs or "
                "pods may still be queued (squeue / kubectl get pods) or failed (their logs); "
                "raise startup_timeout_s in the cluster file to wait longer"
            )
        time.sleep(0.5)


@contextmanager
def open_cluster_file(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Build the cluster a deployment file describes and yield a connected client.

    Parameters
    ----------
    path
        A ``cluster/*.yaml`` file (see :func:`load_cluster_file`).

    Yields
    ------
    distributed.Client
        Connected to the cluster's scheduler. For SLURM and Kubernetes at least one CPU and
        one GPU worker (those the file asks for) have joined, within ``startup_timeout_s``.

    Notes
    -----
    On exit the client closes and so does whatever was started: the local cluster, the
    SLURM jobs (``scancel``), the ``DaskCluster`` resource. An existing scheduler is left
    running.
    """
    from distributed import Client

    file = Path(path)
    spec = load_cluster_file(file)
    check_tls_files(spec, file)
    if isinstance(spec, ClusterConfig):
        with open_local_client(spec) as client:
            yield client
        return
    security = security_for(spec)
    if isinstance(spec, SchedulerSpec):
        client = Client(spec.address, security=security)
        log.info("connected to scheduler %s", spec.address)
        try:
            yield client
        finally:
            client.close()
        return
    if isinstance(spec, SlurmSpec):
        cluster = start_slurm(spec)
        cpu, gpu, timeout_s = spec.cpu.jobs > 0, spec.gpu.jobs > 0, spec.startup_timeout_s
    else:
        cluster = start_kubernetes(spec)
        cpu, gpu, timeout_s = spec.cpu.replicas > 0, spec.gpu.replicas > 0, spec.startup_timeout_s
    try:
        client = Client(cluster, security=security)
        try:
            log.info("Dask dashboard: %s", client.dashboard_link)
            if timeout_s:
                _wait_for_workers(client, cpu=cpu, gpu=gpu, timeout_s=timeout_s)
            yield client
        finally:
            client.close()
    finally:
        if isinstance(spec, SlurmSpec):
            close_slurm(cluster)
        else:
            cluster.close()
