"""Deployment files (cluster/*.yaml): validation, rendering, and real clusters built from them.

SLURM runs against stand-ins for ``sbatch`` / ``scancel`` that start each job script as a local
process, so the scheduler, the job scripts and the worker processes are all real.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from screening.errors import ConfigError
from screening.runtime.client import open_client
from screening.runtime.cluster import ClusterConfig, gpu_worker_count
from screening.runtime.deploy import (
    KubernetesSpec,
    SchedulerSpec,
    SlurmSpec,
    kubernetes_manifest,
    load_cluster_file,
    open_cluster_file,
    security_for,
    slurm_job_scripts,
)

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


def _shipped(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CLUSTER / name).read_text())
    assert isinstance(data, dict)
    return data


def _write(folder: Path, data: dict[str, Any], name: str = "deploy.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data))
    return path


def _slurm_small(tmp_path: Path) -> dict[str, Any]:
    """slurm.yaml shrunk to one 1-core job per kind, runnable on this machine."""
    data = _shipped("slurm.yaml")
    data.update(dashboard_address=None, startup_timeout_s=60)
    for section in ("cpu", "gpu"):
        data[section].update(jobs=1, cores=1, processes=1, memory="1GiB", job_cpu=None)
        data[section]["local_directory"] = str(tmp_path / "scratch")
    return data


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("local.yaml", ClusterConfig),
        ("slurm.yaml", SlurmSpec),
        ("kubernetes.yaml", KubernetesSpec),
        ("kubernetes-s3.yaml", KubernetesSpec),
        ("scheduler-tls.yaml", SchedulerSpec),
    ],
)
def test_shipped_files_validate(name: str, cls: type) -> None:
    spec = load_cluster_file(CLUSTER / name)
    assert type(spec) is cls
    if isinstance(spec, SlurmSpec):
        assert spec.gpu.gpu_request == "--gres=gpu:1" and spec.gpu.processes == 1
        assert spec.cpu.walltime == "04:00:00"
    if isinstance(spec, SchedulerSpec):
        assert spec.address.startswith("tls://") and spec.tls is not None


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    data = _shipped("slurm.yaml")
    data["cpu"]["memroy"] = "4GiB"
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"'cpu\.memroy': unknown setting") as err:
        load_cluster_file(path)
    assert str(path) in str(err.value) and "memory" in str(err.value)  # lists what is expected


def test_a_local_file_is_the_cluster_config_and_says_nothing_of_where(tmp_path: Path) -> None:
    spec = load_cluster_file(_write(tmp_path, {"kind": "local", "workers": 3}))
    assert spec == ClusterConfig(workers=3)
    with pytest.raises(ConfigError, match=r"'scheduler': not a key of a 'kind: local' file"):
        load_cluster_file(_write(tmp_path, {"kind": "local", "scheduler": "tcp://h:8786"}))


def test_wrong_kind_and_missing_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'kind': expected one of .*got 'pbs'") as err:
        load_cluster_file(_write(tmp_path, {"kind": "pbs"}))
    assert str(tmp_path / "deploy.yaml") in str(err.value)
    data = _shipped("slurm.yaml")
    del data["gpu"]
    with pytest.raises(ConfigError, match=r"'gpu': required section is missing"):
        load_cluster_file(_write(tmp_path, data))
    with pytest.raises(ConfigError, match=r"'kind': expected one of .*got missing"):
        load_cluster_file(_write(tmp_path, {"workers": 2}))
    with pytest.raises(ConfigError, match="cannot read the cluster file"):
        load_cluster_file(tmp_path / "absent.yaml")


def test_bad_values_say_what_was_expected(tmp_path: Path) -> None:
    data = _shipped("slurm.yaml")
    path = _write(tmp_path, data)
    # Unquoted 12:00:00 is a YAML 1.1 sexagesimal integer (43200).
    path.write_text(path.read_text().replace("walltime: 04:00:00", "walltime: 12:00:00"))
    with pytest.raises(
        ConfigError, match=r"'cpu\.walltime': expected a string \(quote it: YAML read it as int\)"
    ):
        load_cluster_file(path)
    data["gpu"]["processes"] = 2
    data["gpu"]["cores"] = 2
    with pytest.raises(ConfigError, match=r"'gpu': processes must be 1"):
        load_cluster_file(_write(tmp_path, data))
    data = _shipped("local.yaml") | {"workers": 0}
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        load_cluster_file(_write(tmp_path, data))
    data = _shipped("kubernetes.yaml")
    data["gpu"]["limits"]["nvidia.com/gpu"] = 2
    with pytest.raises(ConfigError, match=r"nvidia\.com/gpu must be 1"):
        load_cluster_file(_write(tmp_path, data))
    data = _shipped("kubernetes.yaml") | {"tls": {"ca_file": "a", "cert": "b", "key": "c"}}
    with pytest.raises(ConfigError, match="tls: is not supported for kind kubernetes"):
        load_cluster_file(_write(tmp_path, data))


def test_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    data = _shipped("scheduler-tls.yaml")
    data["tls"] = {"ca_file": "tls/ca.pem", "cert": "tls/c.pem", "key": "/abs/c.key"}
    spec = load_cluster_file(_write(folder, data))
    assert isinstance(spec, SchedulerSpec) and spec.tls is not None
    assert spec.tls.ca_file == str(folder / "tls" / "ca.pem")
    assert spec.tls.key == "/abs/c.key"
    slurm = load_cluster_file(CLUSTER / "slurm.yaml")
    assert isinstance(slurm, SlurmSpec) and slurm.cpu.local_directory == "$TMPDIR"


# --------------------------------------------------------------------------- local


def test_local_file_opens_a_local_cluster(tmp_path: Path) -> None:
    data = _shipped("local.yaml") | {"workers": 1, "dashboard": False, "gpu_workers": 0}
    cfg = ClusterConfig(cluster_file=str(_write(tmp_path, data)))
    with open_client(cfg) as client:  # the route `screening run --cluster` takes
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2, 3], pure=False).result() == 6
    assert client.status == "closed"


# --------------------------------------------------------------------------- SLURM


def test_slurm_job_scripts_render_both_kinds() -> None:
    spec = load_cluster_file(CLUSTER / "slurm.yaml")
    assert isinstance(spec, SlurmSpec)
    scripts = slurm_job_scripts(spec)
    cpu, gpu = scripts["cpu"], scripts["gpu"]
    assert "#SBATCH -p cpu" in cpu and "#SBATCH -p gpu" in gpu
    assert "#SBATCH --mem=20G" in cpu and "#SBATCH --mem=16G" in gpu
    assert "--nworkers 8" in cpu and "--memory-limit 2.50GiB" in cpu
    assert "#SBATCH --cpus-per-task=4" in gpu
    assert "#SBATCH --gres=gpu:1" in gpu and "--resources GPU=1" in gpu
    assert "gres" not in cpu and "--resources" not in cpu
    for script in (cpu, gpu):
        assert "tcp://<insert-scheduler-address-here>:8786" in script
        assert "--nthreads 1" in script and "--local-directory $TMPDIR" in script
    at = slurm_job_scripts(spec, scheduler_address="tcp://10.0.0.5:40123")
    assert "tcp://10.0.0.5:40123 --name gpu-0" in at["gpu"]


def test_slurm_scripts_with_tls(tmp_path: Path) -> None:
    data = _shipped("slurm.yaml") | {
        "tls": {"ca_file": "ca.pem", "cert": "node.pem", "key": "node.key"}
    }
    spec = load_cluster_file(_write(tmp_path, data))
    assert isinstance(spec, SlurmSpec)
    gpu = slurm_job_scripts(spec)["gpu"]
    assert "tls://<insert-scheduler-address-here>:8786" in gpu and "--protocol tls://" in gpu
    assert f"--tls-ca-file {tmp_path / 'ca.pem'}" in gpu
    assert f"--tls-key {tmp_path / 'node.key'}" in gpu
    security = security_for(spec)
    assert security.require_encryption
    assert security.tls_worker_cert == security.tls_scheduler_cert == str(tmp_path / "node.pem")


_SBATCH = """#!/usr/bin/env bash
# Stand-in for sbatch: run the job script as its own process group, answer like sbatch.
script=$(mktemp "$FAKE_SLURM/job-XXXXXX")
cp "$1" "$script"
setsid bash "$script" > "$script.log" 2>&1 < /dev/null &
echo "$!" >> "$FAKE_SLURM/submitted"
echo "Submitted batch job $!"
"""
_SCANCEL = """#!/usr/bin/env bash
echo "$1" >> "$FAKE_SLURM/cancelled"
kill -TERM -- "-$1" 2>/dev/null || true
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    if not Path("/proc/self/stat").exists() or not any(
        (Path(d) / "setsid").exists() for d in os.get_exec_path()
    ):
        pytest.skip("needs Linux /proc and setsid")
    folder = tmp_path / "fake-slurm"
    folder.mkdir()
    for name, text in (("sbatch", _SBATCH), ("scancel", _SCANCEL)):
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    yield folder
    submitted = folder / "submitted"
    for pid in submitted.read_text().split() if submitted.exists() else []:
        if _alive(int(pid)):  # only if the test failed before scancel: our own jobs
            # It may exit between the check and the kill (scancel is asynchronous).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid), 9)


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_slurm_cpu_and_gpu_jobs_join_one_scheduler(
    tmp_path: Path, fake_slurm: Path, tls: bool, request: pytest.FixtureRequest
) -> None:
    data = _slurm_small(tmp_path)
    if tls:
        data["tls"] = request.getfixturevalue("tls_files")
    path = _write(tmp_path, data)
    with open_cluster_file(path) as client:
        assert client.scheduler.address.startswith("tls://" if tls else "tcp://")
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["name"] for w in workers) == ["cpu-0", "gpu-0"]
        assert gpu_worker_count(client) == 1

        def name() -> str:
            from distributed import get_worker

            return str(get_worker().name)

        assert client.submit(name, resources={"GPU": 1}, pure=False).result() == "gpu-0"
    jobs = (fake_slurm / "submitted").read_text().split()
    assert len(jobs) == 2
    assert sorted((fake_slurm / "cancelled").read_text().split()) == sorted(jobs)
    deadline = time.monotonic() + 15
    while any(_alive(int(p)) for p in jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(int(p)) for p in jobs)


def test_slurm_sbatch_error_raises_and_cancels_the_other_jobs(
    tmp_path: Path, fake_slurm: Path
) -> None:
    sbatch = fake_slurm / "sbatch"
    refuse_gpu = 'grep -q -- "--gres" "$1" && { echo "invalid account" >&2; exit 1; }\n'
    sbatch.write_text(_SBATCH.replace("script=", refuse_gpu + "script=", 1))
    with (
        pytest.raises(RuntimeError, match="invalid account"),
        open_cluster_file(_write(tmp_path, _slurm_small(tmp_path))),
    ):
        pass  # pragma: no cover
    submitted = (fake_slurm / "submitted").read_text().split()
    assert len(submitted) == 1  # the CPU job went in, and was cancelled on the way out
    assert (fake_slurm / "cancelled").read_text().split() == submitted


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifest_has_cpu_and_gpu_groups() -> None:
    spec = load_cluster_file(CLUSTER / "kubernetes.yaml")
    assert isinstance(spec, KubernetesSpec)
    manifest = kubernetes_manifest(spec)
    assert manifest["kind"] == "List"
    cluster, group = manifest["items"]
    assert cluster["kind"] == "DaskCluster" and cluster["metadata"]["name"] == "screening"
    assert group["kind"] == "DaskWorkerGroup" and group["spec"]["cluster"] == "screening"
    cpu = cluster["spec"]["worker"]
    gpu = group["spec"]["worker"]
    assert cpu["replicas"] == 8 and gpu["replicas"] == 1
    cpu_c, gpu_c = cpu["spec"]["containers"][0], gpu["spec"]["containers"][0]
    assert gpu_c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in cpu_c["resources"]["limits"]
    assert "--resources GPU=1" in " ".join(gpu_c["args"])
    assert "--resources" not in cpu_c["args"]
    # The `dask` command: distributed no longer installs `dask-worker` / `dask-scheduler`.
    assert cpu_c["args"][:2] == gpu_c["args"][:2] == ["dask", "worker"]
    scheduler_c = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler_c["args"][:2] == ["dask", "scheduler"]
    for pod, container in ((cpu["spec"], cpu_c), (gpu["spec"], gpu_c)):
        assert container["image"] == "registry.example.org/screening:0.1.0"
        assert container["volumeMounts"] == [{"name": "screening-data", "mountPath": "/data"}]
        assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "screening-data"}
    yaml.safe_dump(manifest)  # plain data that kubectl can take


def test_kubernetes_gpu_limit_is_added_when_left_out(tmp_path: Path) -> None:
    data = _shipped("kubernetes.yaml")
    del data["gpu"]["limits"]["nvidia.com/gpu"]
    spec = load_cluster_file(_write(tmp_path, data))
    assert isinstance(spec, KubernetesSpec)
    group = kubernetes_manifest(spec)["items"][1]
    limits = group["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1


def test_kubernetes_without_gpu_group(tmp_path: Path) -> None:
    data = _shipped("kubernetes.yaml")
    data["gpu"]["replicas"] = 0
    del data["gpu"]["limits"]["nvidia.com/gpu"]
    data["namespace"] = None
    spec = load_cluster_file(_write(tmp_path, data))
    assert isinstance(spec, KubernetesSpec)
    items = kubernetes_manifest(spec)["items"]
    assert [i["kind"] for i in items] == ["DaskCluster"]
    assert "namespace" not in items[0]["metadata"]


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("cryptography")
    from distributed.security import Security

    temp = Security.temporary()  # a self-signed certificate that is also its own CA
    files = {"ca_file": temp.tls_ca_file, "cert": temp.tls_client_cert, "key": temp.tls_client_key}
    out = {}
    for name, pem in files.items():
        (tmp_path / f"{name}.pem").write_text(pem)
        out[name] = f"{name}.pem"  # relative: resolved against the cluster file's folder
    return out


def test_scheduler_tls_connects_with_encryption(tmp_path: Path, tls_files: dict[str, str]) -> None:
    from distributed import LocalCluster
    from distributed.security import Security

    path = _write(tmp_path, {"kind": "scheduler", "address": "tls://x:1", "tls": tls_files})
    spec = load_cluster_file(path)
    security = security_for(spec)
    assert security.require_encryption
    assert security.tls_client_cert == str(tmp_path / "cert.pem")
    assert security.tls_ca_file == str(tmp_path / "ca_file.pem")

    files = {k: str(tmp_path / v) for k, v in tls_files.items()}
    server = Security(
        require_encryption=True,
        tls_ca_file=files["ca_file"],
        **{
            f"tls_{r}_{p}": files[p]
            for r in ("scheduler", "worker", "client")
            for p in ("cert", "key")
        },
    )
    with LocalCluster(
        n_workers=1, processes=False, protocol="tls://", security=server, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        path = _write(tmp_path, {"kind": "scheduler", "address": address, "tls": tls_files})
        with open_cluster_file(path) as client:
            assert client.submit(sum, [4, 5], pure=False).result() == 9
        # Without the tls: section the same address is refused by the file's own validation.
        with pytest.raises(ConfigError, match="no tls: section"):
            load_cluster_file(_write(tmp_path, {"kind": "scheduler", "address": address}))


def test_missing_certificate_file_is_named(tmp_path: Path, tls_files: dict[str, str]) -> None:
    files = tls_files | {"cert": "nowhere.pem"}
    path = _write(tmp_path, {"kind": "scheduler", "address": "tls://x:1", "tls": files})
    with (
        pytest.raises(ConfigError, match=r"'tls\.cert': no such file") as err,
        open_cluster_file(path),
    ):
        pass  # pragma: no cover
    assert str(path) in str(err.value)


def test_cloud_manifest_has_no_volume_and_reads_credentials_from_a_secret() -> None:
    """cluster/kubernetes-s3.yaml: stores and results in a bucket, so no shared volume; the
    credentials reach the scheduler and every worker by Secret reference, never by value."""
    pytest.importorskip("dask_kubernetes.operator", reason="the kubernetes extra builds it")
    spec = load_cluster_file(CLUSTER / "kubernetes-s3.yaml")
    assert isinstance(spec, KubernetesSpec) and spec.volume is None
    items = kubernetes_manifest(spec)["items"]
    pods = [items[0]["spec"]["scheduler"]["spec"], items[0]["spec"]["worker"]["spec"]]
    pods += [item["spec"]["worker"]["spec"] for item in items[1:]]
    assert len(pods) == 3  # scheduler, CPU workers, GPU workers
    for pod in pods:
        assert "volumes" not in pod
        container = pod["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "screening-s3-credentials"}}]
        assert not any("SECRET" in str(e.get("name", "")) for e in container.get("env", []))
