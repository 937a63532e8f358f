"""``kind: slurm``: CPU and GPU worker jobs submitted through dask-jobqueue.

The scheduler runs in this process; dask-jobqueue is an optional extra (``slurm``), imported
only where used.
"""

from __future__ import annotations

import logging
from typing import Any

from screening.errors import attempt_import
from screening.runtime.deploy.specs import (
    GPU_RESOURCE,
    SlurmCpuJobs,
    SlurmGpuJobs,
    SlurmSpec,
    security_for,
)

__all__ = ["slurm_job_scripts"]

log = logging.getLogger(__name__)

_SCHEDULER_PLACEHOLDER = "{protocol}://<insert-scheduler-address-here>:8786"


def _slurm_job_kwargs(jobs: SlurmCpuJobs, spec: SlurmSpec) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.slurm.SLURMJob`` for one section."""
    directives = list(jobs.job_extra_directives)
    extra_args = list(jobs.worker_extra_args)
    if isinstance(jobs, SlurmGpuJobs):
        directives.append(jobs.gpu_request)
        extra_args += ["--resources", f"{GPU_RESOURCE}=1"]
    security = security_for(spec)
    return {
        "queue": jobs.queue,
        "account": jobs.account,
        "cores": jobs.cores,
        "processes": jobs.processes,
        "memory": jobs.memory,
        "walltime": jobs.walltime,
        "job_name": jobs.job_name,
        "job_cpu": jobs.job_cpu,
        "job_extra_directives": directives,
        "job_script_prologue": list(jobs.job_script_prologue),
        "worker_extra_args": extra_args,
        "local_directory": jobs.local_directory,
        "log_directory": jobs.log_directory,
        "python": jobs.python,
        "interface": spec.interface,
        "protocol": "tls://" if security is not None else None,
        "security": security,
        "config_name": "slurm",
    }


def slurm_job_scripts(spec: SlurmSpec, scheduler_address: str | None = None) -> dict[str, str]:
    """The sbatch scripts of the CPU and GPU worker jobs, without submitting anything.

    Rendered by dask-jobqueue's ``SLURMJob.job_script`` (what ``SLURMCluster.job_script``
    renders), so they are exactly what :func:`open_cluster_file` submits, except for the
    worker name and the scheduler address.

    Parameters
    ----------
    spec
        A ``kind: slurm`` spec.
    scheduler_address
        Address the workers connect to; by default dask-jobqueue's placeholder
        (``tcp://<insert-scheduler-address-here>:8786``, ``tls://`` with TLS).

    Returns
    -------
    dict[str, str]
        ``{"cpu": script, "gpu": script}``. Note that dask-jobqueue creates
        ``log_directory`` (when set) while rendering.
    """
    slurm: Any = attempt_import("dask_jobqueue.slurm", "slurm")
    if scheduler_address is None:
        protocol = "tls" if spec.tls is not None else "tcp"
        scheduler_address = _SCHEDULER_PLACEHOLDER.format(protocol=protocol)
    return {
        section: slurm.SLURMJob(
            scheduler_address, name=f"{section}-0", **_slurm_job_kwargs(jobs, spec)
        ).job_script()
        for section, jobs in (("cpu", spec.cpu), ("gpu", spec.gpu))
    }


def start_slurm(spec: SlurmSpec) -> Any:
    """A SLURMCluster whose scheduler also receives the GPU jobs, all jobs submitted."""
    slurm: Any = attempt_import("dask_jobqueue.slurm", "slurm")
    cpu_kwargs = _slurm_job_kwargs(spec.cpu, spec)
    for shared in ("interface", "protocol", "config_name"):
        cpu_kwargs.pop(shared)  # SLURMCluster takes these itself and passes them on
    security = cpu_kwargs.pop("security")
    dashboard = (
        {"dashboard_address": spec.dashboard_address}
        if spec.dashboard_address
        else {"dashboard": False, "dashboard_address": ":0"}  # its HTTP server still starts
    )
    cluster = slurm.SLURMCluster(
        n_workers=0,
        interface=spec.interface,
        security=security,
        scheduler_options=dashboard,
        silence_logs=logging.WARNING,
        **cpu_kwargs,
    )
    try:
        # dask-jobqueue has one job type per cluster. SpecCluster starts each worker_spec entry
        # with its own class and options, so GPU entries with GPU job options join the same
        # scheduler; the entries' names become the SLURM-side worker names.
        for i in range(spec.cpu.jobs):
            cluster.worker_spec[f"cpu-{i}"] = cluster.new_spec
        gpu_entry = {"cls": slurm.SLURMJob, "options": _slurm_job_kwargs(spec.gpu, spec)}
        for i in range(spec.gpu.jobs):
            cluster.worker_spec[f"gpu-{i}"] = gpu_entry
        # Submitting synchronously (not via scale()) makes an sbatch error raise here.
        cluster.sync(cluster._correct_state)
    except BaseException:
        close_slurm(cluster)
        raise
    log.info(
        "submitted %d CPU and %d GPU SLURM job(s) to scheduler %s",
        spec.cpu.jobs,
        spec.gpu.jobs,
        cluster.scheduler_address,
    )
    return cluster


def close_slurm(cluster: Any) -> None:
    """Cancel every job (scancel) and stop the scheduler."""
    from distributed.core import Status

    # dask-jobqueue's Job.close() cancels the job but never updates its status, and
    # SpecCluster.close() asserts that every job it still holds is closing, closed or failed
    # (it holds them after a failed sbatch, for one).
    for job in cluster.workers.values():
        job.status = Status.closing
    cluster.close()
