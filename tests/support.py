"""Helpers shared by the cluster tests."""

from __future__ import annotations

from typing import Any

from kubernetes import client

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


def gpu_deployment(
    name: str, gpus: int, product: str, annotations: dict[str, str] | None = None
) -> client.V1Deployment:
    labels = {"app": name}
    container = client.V1Container(
        name="engine",
        image="registry.example/engine:1",
        resources=client.V1ResourceRequirements(
            limits={"nvidia.com/gpu": str(gpus)}, requests={"nvidia.com/gpu": str(gpus)}
        ),
    )
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels, annotations=annotations),
                spec=client.V1PodSpec(
                    containers=[container],
                    node_selector={"nvidia.com/gpu.product": product},
                    tolerations=[GPU_TOLERATION],
                ),
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
