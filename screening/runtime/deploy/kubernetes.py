"""``kind: kubernetes``: a ``DaskCluster`` and a GPU ``DaskWorkerGroup`` via the operator.

dask-kubernetes is an optional extra (``kubernetes``), imported only where used.
"""

from __future__ import annotations

from typing import Any

from screening.errors import attempt_import
from screening.runtime.deploy.specs import GPU_RESOURCE, KubernetesSpec, KubeWorkerGroup

__all__ = ["kubernetes_manifest"]


def _pod_spec(group: KubeWorkerGroup, spec: KubernetesSpec, make_worker_spec: Any) -> Any:
    # `dask worker`: recent distributed (2026.8 here) installs only the `dask` command, not
    # the `dask-worker` / `dask-scheduler` scripts that dask-kubernetes defaults to.
    command = ["dask", "worker", "--nthreads", str(group.threads)]
    if group.gpu:
        command += ["--resources", f"{GPU_RESOURCE}=1"]
    worker = make_worker_spec(
        image=spec.image,
        n_workers=group.replicas,
        resources=group.resources(),
        env=dict(spec.env),
        worker_command=command,
    )
    pod = worker["spec"]
    if spec.volume is not None:
        claim = {"claimName": spec.volume.claim_name}
        pod["volumes"] = [{"name": "screening-data", "persistentVolumeClaim": claim}]
        pod["containers"][0]["volumeMounts"] = [
            {"name": "screening-data", "mountPath": spec.volume.mount_path}
        ]
    _env_from_secret(pod["containers"][0], spec)
    if group.node_selector:
        pod["nodeSelector"] = dict(group.node_selector)
    if group.tolerations:
        pod["tolerations"] = [dict(t) for t in group.tolerations]
    return worker


def _env_from_secret(container: dict[str, Any], spec: KubernetesSpec) -> None:
    """Credentials by reference: the pod reads the Secret, the manifest never holds them."""
    if spec.env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.env_from_secret}}]


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
    _env_from_secret(scheduler, spec)
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


def start_kubernetes(spec: KubernetesSpec) -> Any:
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
