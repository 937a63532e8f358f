"""Deployment specs: the spec dataclasses of each ``kind``, their YAML parsing, and TLS.

Unknown keys are errors (typos must not be ignored silently), and relative paths in a file
resolve against the file's folder.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from screening.config import FrozenConfig, require
from screening.errors import ConfigError
from screening.runtime.cluster import ClusterConfig

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
    "load_cluster_file",
    "security_for",
]

# Field metadata: a filesystem path that resolves against the YAML file's folder.
_PATH = {"path": True}
GPU_RESOURCE = "GPU"  # the worker resource the segment stage asks for (docs/architecture.md)
_K8S_GPU = "nvidia.com/gpu"


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
            f"'--resources {GPU_RESOURCE}=1' from the gpu: section, CPU workers none",
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
    #: Shared POSIX storage for STORE and RESULTS; None when both live in a bucket.
    volume: KubeVolume | None = None
    #: A Kubernetes Secret whose keys become environment variables of the scheduler and every
    #: worker (object-store credentials: AWS_ACCESS_KEY_ID, ...); its values never enter a file.
    env_from_secret: str | None = None
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


#: ``kind: local`` is the embedded cluster's own :class:`ClusterConfig` (one spec, not two).
DeploySpec = ClusterConfig | SlurmSpec | KubernetesSpec | SchedulerSpec
_KINDS: dict[str, type[Any]] = {
    c.kind: c for c in (ClusterConfig, SlurmSpec, KubernetesSpec, SchedulerSpec)
}


# --------------------------------------------------------------------------- parsing

#: ClusterConfig fields that say where the cluster is, not what the local one looks like.
_NOT_IN_LOCAL_FILES = ("scheduler", "cluster_file")


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
    if kind == ClusterConfig.kind:
        for name in _NOT_IN_LOCAL_FILES:
            if name in data:
                raise ConfigError(
                    f"{name!r}: not a key of a 'kind: local' file (use 'kind: scheduler' to "
                    "connect to a running scheduler)",
                    path=file,
                )
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


def check_tls_files(spec: DeploySpec, file: Path) -> None:
    tls = getattr(spec, "tls", None)
    for name in ("ca_file", "cert", "key"):
        if tls is not None and not os.path.isfile(getattr(tls, name)):
            raise ConfigError(
                f"'tls.{name}': no such file {getattr(tls, name)!r}; expected a PEM file "
                "(relative paths start from the cluster file's folder)",
                path=file,
            )
