"""Deployment files (``cluster/*.yaml``): parse, validate, and build the Dask cluster they describe.

One YAML file describes one deployment; its top-level ``kind`` picks the spec class and what
:func:`open_cluster_file` builds:

- ``local`` (:class:`LocalSpec`): the embedded LocalCluster of :func:`~.cluster.open_client`.
- ``slurm`` (:class:`SlurmSpec`): a scheduler in this process; CPU and GPU worker jobs
  submitted through dask-jobqueue, all joining that scheduler.
- ``kubernetes`` (:class:`KubernetesSpec`): a ``DaskCluster`` (CPU workers) and a GPU
  ``DaskWorkerGroup``, created through the dask-kubernetes operator.
- ``scheduler`` (:class:`SchedulerSpec`): a connection to a running scheduler, TLS if asked.

Unknown keys are errors (typos must not be ignored silently), and relative paths in a file
resolve against the file's folder. dask-jobqueue and dask-kubernetes are optional extras,
imported only where used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from screening.config import FrozenConfig, require
from screening.engine.cluster import ClusterConfig, open_client
from screening.errors import ConfigError, attempt_import

__all__ = [
    "DeploySpec",
    "KubeGpuWorkerGroup",
    "KubeScheduler",
    "KubeVolume",
    "KubeWorkerGroup",
    "KubernetesSpec",
    "LocalSpec",
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

log = logging.getLogger(__name__)

# Field metadata: a filesystem path that resolves against the YAML file's folder.
_PATH = {"path": True}
_GPU_RESOURCE = "GPU"  # the worker resource the segment stage asks for (DESIGN §2)
_K8S_GPU = "nvidia.com/gpu"
_SCHEDULER_PLACEHOLDER = "{protocol}://<insert-scheduler-address-here>:8786"


# --------------------------------------------------------------------------- the specs


@dataclass(frozen=True, kw_only=True)
class TLSSpec(FrozenConfig):
    """Certificate files for TLS: a CA bundle, and one certificate with its private key.

    The same certificate serves every role this process starts (client, and for SLURM also
    the scheduler and the workers), so the files must be readable on every node.
    """

    ca_file: str = field(metadata=_PATH)
    cert: str = field(metadata=_PATH)
    key: str = field(metadata=_PATH)


@dataclass(frozen=True, kw_only=True)
class LocalSpec(FrozenConfig):
    """``kind: local``: the :class:`~screening.engine.cluster.ClusterConfig` fields."""

    kind: ClassVar[str] = "local"
    workers: int | None = None
    threads_per_worker: int = 1
    memory_limit: str = "auto"
    dashboard: bool = True
    gpu_workers: int | None = None

    def __post_init__(self) -> None:
        self.cluster_config()  # validates

    def cluster_config(self) -> ClusterConfig:
        return ClusterConfig(**self.to_dict())


@dataclass(frozen=True, kw_only=True)
class SchedulerSpec(FrozenConfig):
    """``kind: scheduler``: an already running scheduler at ``address``."""

    kind: ClassVar[str] = "scheduler"
    address: str
    tls: TLSSpec | None = None

    def __post_init__(self) -> None:
        scheme = self.address.split("://", 1)[0] if "://" in self.address else ""
        require(
            scheme in ("tcp", "tls"),
            f"address must look like tls://host:8786 (or tcp://host:8786), got {self.address!r}",
        )
        require(
            scheme != "tls" or self.tls is not None,
            "address is tls://... but there is no tls: section; add tls: {ca_file, cert, key}",
        )
        require(
            scheme != "tcp" or self.tls is None,
            "a tls: section is given but address is tcp://...; use tls://host:8786",
        )


@dataclass(frozen=True, kw_only=True)
class SlurmCpuJobs(FrozenConfig):
    """One kind of SLURM worker job (the ``cpu:`` section); each job runs ``processes`` workers."""

    jobs: int
    queue: str | None = None
    account: str | None = None
    cores: int
    processes: int = 1
    memory: str
    walltime: str
    job_name: str | None = None
    job_cpu: int | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    worker_extra_args: tuple[str, ...] = ()
    local_directory: str | None = field(default=None, metadata=_PATH)
    log_directory: str | None = field(default=None, metadata=_PATH)
    python: str | None = field(default=None, metadata=_PATH)

    def __post_init__(self) -> None:
        from dask.utils import parse_bytes

        require(self.jobs >= 0, f"jobs must be >= 0, got {self.jobs}")
        require(self.cores >= 1 and self.processes >= 1, "cores and processes must be >= 1")
        require(
            self.cores % self.processes == 0,
            f"cores ({self.cores}) must be a multiple of processes ({self.processes}): each "
            "worker process gets cores / processes threads",
        )
        try:
            parse_bytes(self.memory)
        except ValueError as e:
            raise ConfigError(f"memory: expected a size like '16GiB', got {self.memory!r}") from e
        require(
            not any(d.lstrip().startswith("#SBATCH") for d in self.job_extra_directives),
            "job_extra_directives: write the option only (e.g. '--gres=gpu:1'); "
            "'#SBATCH ' is added for you",
        )
        require(
            "--resources" not in " ".join(self.worker_extra_args),
            "worker_extra_args must not set --resources: GPU workers get "
            f"'--resources {_GPU_RESOURCE}=1' from the gpu: section, CPU workers none",
        )


@dataclass(frozen=True, kw_only=True)
class SlurmGpuJobs(SlurmCpuJobs):
    """The ``gpu:`` section: one worker process per job, one GPU per job.

    Every GPU worker gets ``--resources GPU=1`` (the segment stage asks for it) and the job
    header gets ``gpu_request`` (``--gres=gpu:1``, or ``--gpus=1``, as the site prefers).
    """

    gpu_request: str = "--gres=gpu:1"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.processes == 1,
            f"processes must be 1 for GPU jobs (one worker per GPU), got {self.processes}",
        )
        require(
            self.gpu_request.startswith("--"),
            f"gpu_request: expected an sbatch option like '--gres=gpu:1', got {self.gpu_request!r}",
        )


@dataclass(frozen=True, kw_only=True)
class SlurmSpec(FrozenConfig):
    """``kind: slurm``: the scheduler runs in this process; workers are SLURM jobs."""

    kind: ClassVar[str] = "slurm"
    cpu: SlurmCpuJobs
    gpu: SlurmGpuJobs
    interface: str | None = None
    dashboard_address: str | None = ":8787"
    startup_timeout_s: float = 600.0
    tls: TLSSpec | None = None

    def __post_init__(self) -> None:
        require(self.cpu.jobs + self.gpu.jobs >= 1, "cpu.jobs + gpu.jobs must be >= 1")
        require(self.startup_timeout_s >= 0, "startup_timeout_s must be >= 0")


@dataclass(frozen=True, kw_only=True)
class KubeWorkerGroup(FrozenConfig):
    """A group of identical worker pods (``cpu:``; ``gpu:`` adds one GPU per pod)."""

    replicas: int
    threads: int = 1
    requests: dict[str, str | int] = field(default_factory=dict)
    limits: dict[str, str | int] = field(default_factory=dict)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, str | int], ...] = ()

    gpu: ClassVar[bool] = False

    def __post_init__(self) -> None:
        require(self.replicas >= 0, f"replicas must be >= 0, got {self.replicas}")
        require(self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        gpus = self.limits.get(_K8S_GPU)
        if self.gpu:
            require(
                gpus is None or str(gpus) == "1",
                f"limits.{_K8S_GPU} must be 1 (one GPU per worker pod), got {gpus!r}",
            )
        else:
            require(gpus is None, f"CPU workers must not request {_K8S_GPU}; use the gpu: group")

    def resources(self) -> dict[str, dict[str, str | int]]:
        limits = dict(self.limits)
        if self.gpu:
            limits[_K8S_GPU] = 1  # Kubernetes schedules extended resources by their limit
        return {"requests": dict(self.requests), "limits": limits}


@dataclass(frozen=True, kw_only=True)
class KubeGpuWorkerGroup(KubeWorkerGroup):
    """The ``gpu:`` group: each pod gets one ``nvidia.com/gpu`` and ``--resources GPU=1``."""

    gpu: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class KubeScheduler(FrozenConfig):
    """The scheduler pod: its Service type and its resource requests and limits."""

    service_type: str = "ClusterIP"
    requests: dict[str, str | int] = field(default_factory=dict)
    limits: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class KubeVolume(FrozenConfig):
    """A PersistentVolumeClaim mounted at ``mount_path`` in every worker pod."""

    claim_name: str
    mount_path: str

    def __post_init__(self) -> None:
        require(
            self.mount_path.startswith("/"),
            f"mount_path must be absolute (the path inside the pods), got {self.mount_path!r}",
        )


@dataclass(frozen=True, kw_only=True)
class KubernetesSpec(FrozenConfig):
    """``kind: kubernetes``: a DaskCluster resource managed by the dask-kubernetes operator."""

    kind: ClassVar[str] = "kubernetes"
    name: str
    namespace: str | None = None
    image: str
    env: dict[str, str] = field(default_factory=dict)
    scheduler: KubeScheduler = field(default_factory=KubeScheduler)
    cpu: KubeWorkerGroup
    gpu: KubeGpuWorkerGroup
    volume: KubeVolume
    startup_timeout_s: float = 600.0
    tls: TLSSpec | None = None

    def __post_init__(self) -> None:
        require(
            re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,41}[a-z0-9])?", self.name) is not None,
            f"name must be lowercase letters, digits and '-', at most 43 characters (it "
            f"names Kubernetes objects), got {self.name!r}",
        )
        # The operator's controller hands workers a hard-coded tcp:// scheduler address and
        # KubeCluster connects over tcp://, so TLS cannot be switched on from here.
        require(
            self.tls is None,
            "tls: is not supported for kind kubernetes (the dask-kubernetes operator always "
            "uses tcp:// inside the cluster); remove it and run the client inside the "
            "cluster, or use a service mesh with mutual TLS (see cluster/README.md)",
        )
        require(self.cpu.replicas + self.gpu.replicas >= 1, "cpu + gpu replicas must be >= 1")
        require(self.startup_timeout_s >= 0, "startup_timeout_s must be >= 0")


DeploySpec = LocalSpec | SlurmSpec | KubernetesSpec | SchedulerSpec
_KINDS: dict[str, type[Any]] = {
    c.kind: c for c in (LocalSpec, SlurmSpec, KubernetesSpec, SchedulerSpec)
}


# --------------------------------------------------------------------------- parsing


def load_cluster_file(path: str | os.PathLike[str]) -> DeploySpec:
    """Read and validate a deployment file.

    Parameters
    ----------
    path
        A YAML file with a top-level ``kind`` (local | slurm | kubernetes | scheduler).

    Returns
    -------
    DeploySpec
        The spec of that kind; relative paths in it are resolved against the file's folder.

    Raises
    ------
    ConfigError
        The file is missing or not YAML, or a setting is unknown, missing or of the wrong
        type; the message names the file and the setting and says what was expected.
    """
    import yaml

    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(
            f"cannot read the cluster file ({e.strerror}); expected a YAML file such as "
            "cluster/local.yaml",
            path=file,
        ) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", path=file) from e
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"expected a mapping with a 'kind:' key, got {type(data).__name__}", path=file
        )
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in _KINDS:
        got = "missing" if kind is None else repr(kind)
        raise ConfigError(f"'kind': expected one of {sorted(_KINDS)}, got {got}", path=file)
    spec: DeploySpec = _parse(_KINDS[kind], data, where="", file=file)
    return spec


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _parse(cls: type[Any], data: Any, *, where: str, file: Path) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, rejecting unknown and missing keys."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"'{where}': expected a mapping of settings, got {type(data).__name__}", path=file
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            raise ConfigError(
                f"'{_key(where, str(name))}': unknown setting; expected one of "
                f"{sorted(fields)} (a typo?)",
                path=file,
            )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = _key(where, name)
        if name in data:
            kwargs[name] = _value(hints[name], data[name], key=key, file=file, meta=f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            section = "section" if dataclasses.is_dataclass(hints[name]) else "setting"
            raise ConfigError(f"'{key}': required {section} is missing", path=file)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"'{where or cls.kind}': {e.message}", path=file) from e


def _value(tp: Any, value: Any, *, key: str, file: Path, meta: Mapping[str, Any]) -> Any:
    """Check one YAML value against annotation ``tp`` and convert it (lists to tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        errors = []
        for arg in args:
            try:
                return _value(arg, value, key=key, file=file, meta=meta)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return _parse(typing.cast(type, tp), value, where=key, file=file)
    if origin is tuple:
        if not isinstance(value, list):
            raise _wrong(key, "a list", value, file)
        item = typing.get_args(tp)[0]
        return tuple(
            _value(item, v, key=f"{key}[{i}]", file=file, meta={}) for i, v in enumerate(value)
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong(key, "a mapping", value, file)
        item = typing.get_args(tp)[1]
        return {
            str(k): _value(item, v, key=f"{key}.{k}", file=file, meta={}) for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(key, "true or false", value, file)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(key, "an integer", value, file)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong(key, "a number", value, file)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            read_as = type(value).__name__
            hint = (
                f" (quote it: YAML read it as {read_as})" if isinstance(value, int | float) else ""
            )
            raise _wrong(key, f"a string{hint}", value, file)
        if meta.get("path"):
            return _resolve(value, file)
        return value
    raise TypeError(f"no parser for {tp!r}")  # a bug in the spec classes, not in the file


def _wrong(key: str, expected: str, value: Any, file: Path) -> ConfigError:
    return ConfigError(f"'{key}': expected {expected}, got {value!r}", path=file)


def _resolve(value: str, file: Path) -> str:
    # $VARS and ~ are left for the shell of the node that runs the job to expand.
    if value.startswith(("$", "~")) or os.path.isabs(value):
        return value
    return str((file.parent / value).resolve())


# --------------------------------------------------------------------------- TLS


def security_for(spec: DeploySpec) -> Any:
    """The ``distributed.security.Security`` for a spec's ``tls:`` section, or ``None``.

    For ``kind: scheduler`` the certificate is the client's; for ``kind: slurm`` it also
    serves the scheduler (started here) and the workers (passed as ``--tls-*`` options).
    Encryption is required: the pseudonymisation key travels in ingest task graphs.
    """
    tls = getattr(spec, "tls", None)
    if tls is None:
        return None
    from distributed.security import Security

    roles = ("client", "scheduler", "worker") if isinstance(spec, SlurmSpec) else ("client",)
    kwargs = {"tls_ca_file": tls.ca_file}
    for role in roles:
        kwargs[f"tls_{role}_cert"] = tls.cert
        kwargs[f"tls_{role}_key"] = tls.key
    return Security(require_encryption=True, **kwargs)


def _check_tls_files(spec: DeploySpec, file: Path) -> None:
    tls = getattr(spec, "tls", None)
    for name in ("ca_file", "cert", "key"):
        if tls is not None and not os.path.isfile(getattr(tls, name)):
            raise ConfigError(
                f"'tls.{name}': no such file {getattr(tls, name)!r}; expected a PEM file "
                "(relative paths start from the cluster file's folder)",
                path=file,
            )


# --------------------------------------------------------------------------- SLURM


def _slurm_job_kwargs(jobs: SlurmCpuJobs, spec: SlurmSpec) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.slurm.SLURMJob`` for one section."""
    directives = list(jobs.job_extra_directives)
    extra_args = list(jobs.worker_extra_args)
    if isinstance(jobs, SlurmGpuJobs):
        directives.append(jobs.gpu_request)
        extra_args += ["--resources", f"{_GPU_RESOURCE}=1"]
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


def _start_slurm(spec: SlurmSpec) -> Any:
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
        _close_slurm(cluster)
        raise
    log.info(
        "submitted %d CPU and %d GPU SLURM job(s) to scheduler %s",
        spec.cpu.jobs,
        spec.gpu.jobs,
        cluster.scheduler_address,
    )
    return cluster


def _close_slurm(cluster: Any) -> None:
    """Cancel every job (scancel) and stop the scheduler."""
    from distributed.core import Status

    # dask-jobqueue's Job.close() cancels the job but never updates its status, and
    # SpecCluster.close() asserts that every job it still holds is closing, closed or failed
    # (it holds them after a failed sbatch, for one).
    for job in cluster.workers.values():
        job.status = Status.closing
    cluster.close()


# --------------------------------------------------------------------------- Kubernetes


def _pod_spec(group: KubeWorkerGroup, spec: KubernetesSpec, make_worker_spec: Any) -> Any:
    # `dask worker`: recent distributed (2026.8 here) installs only the `dask` command, not
    # the `dask-worker` / `dask-scheduler` scripts that dask-kubernetes defaults to.
    command = ["dask", "worker", "--nthreads", str(group.threads)]
    if group.gpu:
        command += ["--resources", f"{_GPU_RESOURCE}=1"]
    worker = make_worker_spec(
        image=spec.image,
        n_workers=group.replicas,
        resources=group.resources(),
        env=dict(spec.env),
        worker_command=command,
    )
    pod = worker["spec"]
    pod["volumes"] = [
        {"name": "screening-data", "persistentVolumeClaim": {"claimName": spec.volume.claim_name}}
    ]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "screening-data", "mountPath": spec.volume.mount_path}
    ]
    if group.node_selector:
        pod["nodeSelector"] = dict(group.node_selector)
    if group.tolerations:
        pod["tolerations"] = [dict(t) for t in group.tolerations]
    return worker


def kubernetes_manifest(spec: KubernetesSpec) -> dict[str, Any]:
    """The Kubernetes objects of a deployment, without contacting any cluster.

    Returns
    -------
    dict
        A ``kind: List`` whose items are the ``DaskCluster`` (scheduler and the CPU worker
        group as its default group, from ``dask_kubernetes.operator.make_cluster_spec``) and,
        when ``gpu.replicas`` > 0, the GPU ``DaskWorkerGroup``; ``kubectl apply -f`` takes
        it as YAML. :func:`open_cluster_file` creates the same objects through ``KubeCluster``.
    """
    operator: Any = attempt_import("dask_kubernetes.operator", "kubernetes")
    cluster = operator.make_cluster_spec(
        name=spec.name,
        image=spec.image,
        env=dict(spec.env),
        scheduler_service_type=spec.scheduler.service_type,
    )
    cluster["metadata"]["namespace"] = spec.namespace
    cluster["spec"]["worker"] = _pod_spec(spec.cpu, spec, operator.make_worker_spec)
    scheduler = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["args"] = ["dask", "scheduler", *scheduler["args"][1:]]  # as for the workers
    scheduler["resources"] = {
        "requests": dict(spec.scheduler.requests),
        "limits": dict(spec.scheduler.limits),
    }
    items = [cluster]
    if spec.gpu.replicas:
        items.append(
            {
                "apiVersion": "kubernetes.dask.org/v1",
                "kind": "DaskWorkerGroup",
                # The name add_worker_group("gpu") gives it, so both routes make one object.
                "metadata": {"name": f"{spec.name}-gpu", "namespace": spec.namespace},
                "spec": {
                    "cluster": spec.name,
                    "worker": _pod_spec(spec.gpu, spec, operator.make_worker_spec),
                },
            }
        )
    for item in items:
        if item["metadata"]["namespace"] is None:
            del item["metadata"]["namespace"]  # kubectl / KubeCluster pick the current one
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _start_kubernetes(spec: KubernetesSpec) -> Any:
    operator: Any = attempt_import("dask_kubernetes.operator", "kubernetes")
    from dask_kubernetes.operator.kubecluster.kubecluster import CreateMode

    items = kubernetes_manifest(spec)["items"]
    # CREATE_ONLY: never adopt (and then delete on close) someone else's cluster of that name.
    cluster = operator.KubeCluster(
        custom_cluster_spec=items[0],
        namespace=spec.namespace,
        create_mode=CreateMode.CREATE_ONLY,
        shutdown_on_close=True,
        quiet=True,
    )
    try:
        if len(items) > 1:
            cluster.add_worker_group(
                "gpu", n_workers=spec.gpu.replicas, custom_spec=items[1]["spec"]["worker"]
            )
    except BaseException:
        cluster.close()
        raise
    return cluster


# --------------------------------------------------------------------------- opening


def _wait_for_workers(client: Any, *, cpu: bool, gpu: bool, timeout_s: float) -> None:
    """Wait until at least one CPU and one GPU worker (those asked for) have joined."""
    deadline = time.monotonic() + timeout_s
    while True:
        workers = client.scheduler_info(n_workers=-1).get("workers", {}).values()
        n_gpu = sum(1 for w in workers if w.get("resources", {}).get(_GPU_RESOURCE, 0) >= 1)
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
    _check_tls_files(spec, file)
    if isinstance(spec, LocalSpec):
        with open_client(spec.cluster_config()) as client:
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
        cluster = _start_slurm(spec)
        cpu, gpu, timeout_s = spec.cpu.jobs > 0, spec.gpu.jobs > 0, spec.startup_timeout_s
    else:
        cluster = _start_kubernetes(spec)
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
            _close_slurm(cluster)
        else:
            cluster.close()
