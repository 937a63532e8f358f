"""Deployment files (``cluster/*.yaml``): parse, validate, and build the Dask cluster they describe.

One YAML file describes one deployment; its top-level ``kind`` picks the spec class and what
:func:`open_cluster_file` builds:

- ``local`` (:class:`~screening.runtime.cluster.ClusterConfig`): the embedded LocalCluster of
  :func:`~screening.runtime.client.open_client`.
- ``slurm`` (:class:`SlurmSpec`): a scheduler in this process; CPU and GPU worker jobs
  submitted through dask-jobqueue, all joining that scheduler.
- ``kubernetes`` (:class:`KubernetesSpec`): a ``DaskCluster`` (CPU workers) and a GPU
  ``DaskWorkerGroup``, created through the dask-kubernetes operator.
- ``scheduler`` (:class:`SchedulerSpec`): a connection to a running scheduler, TLS if asked.

Unknown keys are errors (typos must not be ignored silently), and relative paths in a file
resolve against the file's folder. dask-jobqueue and dask-kubernetes are optional extras,
imported only where used.

The modules: :mod:`.specs` (the spec classes, YAML parsing and validation, TLS),
:mod:`.slurm`, :mod:`.kubernetes`, and :mod:`.launch` (:func:`open_cluster_file`).
"""

from __future__ import annotations

from screening.runtime.deploy.kubernetes import kubernetes_manifest
from screening.runtime.deploy.launch import open_cluster_file
from screening.runtime.deploy.slurm import slurm_job_scripts
from screening.runtime.deploy.specs import (
    DeploySpec,
    KubeGpuWorkerGroup,
    KubernetesSpec,
    KubeScheduler,
    KubeVolume,
    KubeWorkerGroup,
    SchedulerSpec,
    SlurmCpuJobs,
    SlurmGpuJobs,
    SlurmSpec,
    TLSSpec,
    load_cluster_file,
    security_for,
)

__all__ = [
    "DeploySpec",
    "KubeGpuWorkerGroup",
    "KubeScheduler",
    "KubeVolume",
    "KubeWorkerGroup",
    "KubernetesSpec",
    "SchedulerSpec",
    "SlurmCpuJobs",
    "SlurmGpuJobs",
    "SlurmSpec",
    "TLSSpec",
    "kubernetes_manifest",
    "load_cluster_file",
    "open_cluster_file",
    "security_for",
    "slurm_job_scripts",
]
