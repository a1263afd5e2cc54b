"""The local cluster is a real Kubernetes control plane with simulated GPU nodes."""

from __future__ import annotations

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.support import H100, condition, gpu_deployment


def _pods(cluster: Cluster, namespace: str, app: str) -> list[client.V1Pod]:
    return cluster.core.list_namespaced_pod(namespace, label_selector=f"app={app}").items


def test_an_8_gpu_h100_deployment_runs_on_an_h100_node_and_becomes_ready(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apps.create_namespaced_deployment(namespace, gpu_deployment("llm", gpus=8, product=H100))

    def ready_deployment() -> client.V1Deployment | None:
        d = cluster.apps.read_namespaced_deployment("llm", namespace)
        return d if d.status.ready_replicas == 1 else None

    wait_for(ready_deployment, timeout=60, what="Deployment llm ready")
    [pod] = _pods(cluster, namespace, "llm")
    assert condition(pod, "Ready").status == "True"
    node = cluster.core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100
    assert node.status.allocatable["nvidia.com/gpu"] == "8"


def test_a_16_gpu_pod_fits_no_node_and_stays_pending_unschedulable(cluster: Cluster, namespace: str) -> None:
    cluster.apps.create_namespaced_deployment(namespace, gpu_deployment("too-big", gpus=16, product=H100))

    def unschedulable_pod() -> client.V1Pod | None:
        for pod in _pods(cluster, namespace, "too-big"):
            cond = condition(pod, "PodScheduled")
            if cond is not None and cond.status == "False" and cond.reason == "Unschedulable":
                return pod
        return None

    pod = wait_for(unschedulable_pod, timeout=60, what="the scheduler to mark the 16-GPU pod Unschedulable")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    assert "nvidia.com/gpu" in condition(pod, "PodScheduled").message


def test_a_pod_loading_a_model_is_running_but_not_ready_until_its_cold_start_passes(
    cluster: Cluster, namespace: str
) -> None:
    deployment = gpu_deployment(
        "cold", gpus=1, product="NVIDIA-L4", annotations={"inferfleet.io/sim-cold-start": "4s"}
    )
    cluster.apps.create_namespaced_deployment(namespace, deployment)

    def running_pod() -> client.V1Pod | None:
        pods = [p for p in _pods(cluster, namespace, "cold") if p.status.phase == "Running"]
        return pods[0] if pods else None

    pod = wait_for(running_pod, timeout=60, what="the pod to start")
    assert condition(pod, "Ready").status == "False"

    def ready_pod() -> client.V1Pod | None:
        p = cluster.core.read_namespaced_pod(pod.metadata.name, namespace)
        return p if condition(p, "Ready").status == "True" else None

    ready = wait_for(ready_pod, timeout=60, what="the pod to finish its cold start")
    started = ready.status.container_statuses[0].state.running.started_at
    became_ready = condition(ready, "Ready").last_transition_time
    assert (became_ready - started).total_seconds() >= 3.5


def test_deleting_an_owner_garbage_collects_its_children(cluster: Cluster, namespace: str) -> None:
    owner = cluster.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    cluster.core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[ref]))
    )
    cluster.apps.create_namespaced_deployment(namespace, gpu_deployment("owned", gpus=1, product="NVIDIA-L4"))
    wait_for(lambda: _pods(cluster, namespace, "owned"), timeout=60, what="the Deployment's pod")

    cluster.core.delete_namespaced_config_map("owner", namespace)
    cluster.apps.delete_namespaced_deployment("owned", namespace)

    def gone() -> bool:
        try:
            cluster.core.read_namespaced_config_map("child", namespace)
            return False
        except ApiException as e:
            return e.status == 404

    wait_for(gone, timeout=60, what="the garbage collector to delete the child ConfigMap")
    wait_for(
        lambda: not _pods(cluster, namespace, "owned"),
        timeout=60,
        what="the Deployment's ReplicaSet and pod to be collected",
    )


CEL_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "celprobes.test.inferfleet.io"},
    "spec": {
        "group": "test.inferfleet.io",
        "scope": "Namespaced",
        "names": {"plural": "celprobes", "singular": "celprobe", "kind": "CelProbe"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "minReplicas": {"type": "integer"},
                                    "maxReplicas": {"type": "integer"},
                                },
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.minReplicas <= self.maxReplicas",
                                        "message": "minReplicas must not exceed maxReplicas",
                                    }
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


def test_a_crd_cel_rule_rejects_an_invalid_object_with_its_message(cluster: Cluster, namespace: str) -> None:
    try:
        cluster.ext.create_custom_resource_definition(CEL_CRD)
    except ApiException as e:
        if e.status != 409:
            raise

    def established() -> bool:
        crd = cluster.ext.read_custom_resource_definition("celprobes.test.inferfleet.io")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, timeout=30, what="the CRD to be established")

    def create(min_: int, max_: int) -> dict:
        body = {
            "apiVersion": "test.inferfleet.io/v1",
            "kind": "CelProbe",
            "metadata": {"generateName": "probe-"},
            "spec": {"minReplicas": min_, "maxReplicas": max_},
        }
        return cluster.custom.create_namespaced_custom_object(
            "test.inferfleet.io", "v1", namespace, "celprobes", body
        )

    # The API server may need a moment after Established before it serves the new kind.
    wait_for(lambda: create(1, 2), timeout=30, what="a valid object to be accepted")
    with pytest.raises(ApiException) as info:
        create(3, 2)
    assert info.value.status == 422
    assert "minReplicas must not exceed maxReplicas" in info.value.body
