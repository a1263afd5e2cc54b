"""Helpers shared by the cluster tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from inferfleet.localcluster.waiting import wait_for

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


RESTRICTED_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""A container securityContext the `restricted` Pod Security profile admits."""


def restricted_namespace(core: client.CoreV1Api, prefix: str) -> str:
    """A new namespace that enforces the `restricted` Pod Security profile."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    return name


def gpu_pod_spec(gpus: int, product: str) -> client.V1PodSpec:
    container = client.V1Container(
        name="engine",
        image="registry.example/engine:1",
        resources=client.V1ResourceRequirements(
            limits={"nvidia.com/gpu": str(gpus)}, requests={"nvidia.com/gpu": str(gpus)}
        ),
    )
    return client.V1PodSpec(
        containers=[container],
        node_selector={"nvidia.com/gpu.product": product},
        tolerations=[GPU_TOLERATION],
    )


def gpu_pod(name: str, gpus: int, product: str) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=gpu_pod_spec(gpus, product))


def gpu_deployment(
    name: str, gpus: int, product: str, annotations: dict[str, str] | None = None
) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations=annotations),
                spec=gpu_pod_spec(gpus, product),
            ),
        ),
    )


def condition(obj: Any, type_: str) -> Any | None:
    for c in (obj.status.conditions or []) if obj.status else []:
        if c.type == type_:
            return c
    return None


def status_condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition of `type_` in a custom object's status, or {} when it has none yet."""
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def wait_for_idle_nodes(core: client.CoreV1Api, product: str, timeout: float = 180) -> list[str]:
    """Names of the `product` nodes, once no pod is bound to any of them."""
    nodes = [
        n.metadata.name for n in core.list_node(label_selector=f"nvidia.com/gpu.product={product}").items
    ]
    wait_for(
        lambda: not any(p.spec.node_name in nodes for p in core.list_pod_for_all_namespaces().items),
        timeout=timeout,
        what=f"no pod left on the {product} nodes",
    )
    return sorted(nodes)


def wait_for_idle_h100(core: client.CoreV1Api, apps: client.AppsV1Api, timeout: float = 180) -> None:
    """Earlier tests' namespaces are deleted in the background; GPU-heavy tests start with every H100
    free: no pod bound there, and no replica group left whose reservation would hold its nodes."""
    h100 = {n.metadata.name for n in core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items}

    def idle() -> bool:
        groups = apps.list_stateful_set_for_all_namespaces(label_selector="inferfleet.io/service").items
        pods = core.list_pod_for_all_namespaces().items
        return not groups and not any(p.spec.node_name in h100 for p in pods)

    wait_for(idle, timeout=timeout, what="no replica group and no pod left on the H100 nodes")


def token_kubeconfig(
    core: client.CoreV1Api, admin_kubeconfig: Path, service_account: str, namespace: str, path: Path
) -> Path:
    """`admin_kubeconfig` with a ServiceAccount's token as the only credential."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = core.create_namespaced_service_account_token(service_account, namespace, request).status.token
    kubeconfig = yaml.safe_load(admin_kubeconfig.read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(kubeconfig))
    return path


def kwok_stage_keys(cluster: Any, stage: str) -> list[str]:
    """The selector keys of one stage of a LocalCluster's KWOK configuration."""
    stages = [d for d in yaml.safe_load_all(cluster._kwok_config()) if d.get("kind") == "Stage"]
    [found] = [s for s in stages if s["metadata"]["name"] == stage]
    return [e["key"] for e in found["spec"]["selector"]["matchExpressions"]]
