"""End to end on a cluster whose nodes run containers (kind): a custom-engine InferenceService whose
image is the simulated engine (`inferfleet sim-engine`) becomes Ready, scales through the scale
subresource, serves a load Job through its Service, and leaves nothing behind when deleted.

Needs INFERFLEET_E2E_ENGINE_IMAGE, an image with the inferfleet package and ENTRYPOINT
`inferfleet` (the operator image) that the nodes already have or can pull, and nodes labelled as
NVIDIA-A100-SXM4-40GB GPU nodes with `nvidia.com/gpu` capacity (.github/workflows/e2e.yml).
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.waiting import GiveUpError, wait_for
from tests.conftest import Cluster
from tests.integration.test_reconcile import GROUP, PLURAL, VERSION, create, read

ENGINE_IMAGE = os.environ.get("INFERFLEET_E2E_ENGINE_IMAGE", "")
PRODUCT = "NVIDIA-A100-SXM4-40GB"
MODEL = "tiny"
PORT = 8000
MERGE_PATCH = "application/merge-patch+json"
SUMMARY = re.compile(r"sent=(\d+) ok=(\d+) errors=(\d+) skipped=(\d+)")

pytestmark = [
    pytest.mark.skipif(
        not ENGINE_IMAGE,
        reason="e2e tests need INFERFLEET_E2E_ENGINE_IMAGE (the simulated engine's image) and a cluster "
        "whose nodes run containers, e.g. kind as in .github/workflows/e2e.yml",
    ),
    pytest.mark.usefixtures("operator"),
]


def sim_service(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": MODEL, "source": "hf://example/tiny-1b", "parametersBillions": 1.0},
            "engine": {
                "kind": "custom",
                "image": ENGINE_IMAGE,
                "args": ["sim-engine", "--model", MODEL, "--port", str(PORT)],
                "port": PORT,
            },
            "accelerator": {"product": PRODUCT, "memoryGiB": 40, "gpusPerNode": 8},
            "replicas": replicas,
        },
    }


def service_pods(cluster: Cluster, namespace: str, name: str) -> list[client.V1Pod]:
    """Every pod of the service, terminating ones included."""
    pods: list[client.V1Pod] = cluster.core.list_namespaced_pod(
        namespace, label_selector=f"inferfleet.io/service={name}"
    ).items
    return pods


def pod_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions if pod.status else None
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in conditions or []
    )


def wait_ready_replicas(cluster: Cluster, namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """The InferenceService once its current spec is Ready with `replicas` ready pods."""

    def ready() -> dict[str, Any]:
        obj = read(cluster, namespace, name)
        status = obj.get("status", {})
        pods = [p for p in service_pods(cluster, namespace, name) if pod_ready(p)]
        seen = (status.get("observedGeneration"), status.get("phase"), status.get("readyReplicas"), len(pods))
        if seen == (obj["metadata"]["generation"], "Ready", replicas, replicas):
            return obj
        # Chained to the timeout error: what was seen last says why it never got there.
        conditions = [(c["type"], c["status"], c.get("reason")) for c in status.get("conditions", [])]
        raise AssertionError(f"(observedGeneration, phase, readyReplicas, ready pods)={seen} {conditions}")

    return wait_for(ready, timeout=240, what=f"{replicas} ready replicas of {name}", interval=1)


def engine_metrics(cluster: Cluster, namespace: str, pod: str) -> dict[str, float]:
    """The engine's /metrics samples by metric name, read through the API server's pod proxy."""
    response = cluster.core.connect_get_namespaced_pod_proxy_with_path(
        f"{pod}:{PORT}", namespace, "metrics", _preload_content=False
    )
    lines = [line for line in response.data.decode().splitlines() if line and not line.startswith("#")]
    return {line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def load_job(name: str, url: str) -> dict[str, Any]:
    """A Job running `inferfleet sim-load` from the engine image; restricted Pod Security compliant."""
    args = ["sim-load", "--url", url, "--rps", "10", "--duration", "15", "--max-tokens", "16", "--seed", "1"]
    container = {
        "name": "load",
        "image": ENGINE_IMAGE,
        "imagePullPolicy": "IfNotPresent",  # kind-loaded: present on every node, never pulled
        "args": args,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 300, "template": {"spec": pod_spec}},
    }


def run_job(cluster: Cluster, namespace: str, body: dict[str, Any]) -> tuple[bool, str]:
    """Run the Job to its end: (succeeded, its pod's log)."""
    batch = client.BatchV1Api(cluster.api_client)
    name = body["metadata"]["name"]
    batch.create_namespaced_job(namespace, body)

    def finished() -> str | None:
        status = batch.read_namespaced_job_status(name, namespace).status
        return "succeeded" if status.succeeded else "failed" if status.failed else None

    outcome = wait_for(finished, timeout=360, what=f"Job {name} to finish", interval=2)
    [pod] = cluster.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items
    log = cluster.core.read_namespaced_pod_log(pod.metadata.name, namespace, _preload_content=False)
    return outcome == "succeeded", log.data.decode()


def test_the_simulated_engine_becomes_ready_scales_to_two_and_serves_a_load_job(
    cluster: Cluster, namespace: str
) -> None:
    # (a) one replica, Ready because its pod really passes the probes the operator gave it.
    create(cluster, namespace, sim_service("sim"))
    obj = wait_ready_replicas(cluster, namespace, "sim", 1)
    assert obj["status"]["endpoint"] == f"http://sim.{namespace}.svc:{PORT}/v1"
    [pod] = service_pods(cluster, namespace, "sim")
    engine = pod.spec.containers[0]
    assert engine.image == ENGINE_IMAGE
    assert engine.image_pull_policy != "Always"  # the image is kind-loaded, not in a registry
    assert engine.args[0] == "sim-engine"
    assert engine.readiness_probe.tcp_socket.port == "http"
    assert cluster.core.read_node(pod.spec.node_name).metadata.labels["nvidia.com/gpu.product"] == PRODUCT

    # (b) two replicas through the scale subresource, as `kubectl scale` or an HPA would.
    cluster.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, PLURAL, "sim", {"spec": {"replicas": 2}}, _content_type=MERGE_PATCH
    )
    wait_ready_replicas(cluster, namespace, "sim", 2)
    scale = cluster.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "sim")
    assert (scale["spec"]["replicas"], scale["status"]["replicas"]) == (2, 2)
    assert scale["status"]["selector"] == "inferfleet.io/service=sim"

    # (c) a load Job in the cluster, through the Service at the endpoint the status advertises.
    succeeded, log = run_job(cluster, namespace, load_job("load", obj["status"]["endpoint"]))
    print(log)
    assert succeeded, f"the load Job failed:\n{log}"
    match = SUMMARY.search(log)
    assert match, f"no summary in the load Job's log:\n{log}"
    sent, ok, errors, skipped = map(int, match.groups())
    assert sent > 0
    assert (ok, errors, skipped) == (sent, 0, 0)
    served = {
        p.metadata.name: engine_metrics(cluster, namespace, p.metadata.name)["vllm:request_success_total"]
        for p in service_pods(cluster, namespace, "sim")
    }
    assert sum(served.values()) == ok
    assert all(count > 0 for count in served.values()), f"a replica got no requests: {served}"


def test_deleting_the_service_removes_every_child(cluster: Cluster, namespace: str) -> None:
    create(cluster, namespace, sim_service("gone"))
    wait_ready_replicas(cluster, namespace, "gone", 1)
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "gone")

    def all_gone() -> bool:
        selector = "inferfleet.io/service=gone"
        remaining = {
            "Deployments": cluster.apps.list_namespaced_deployment(namespace, label_selector=selector).items,
            "StatefulSets": cluster.apps.list_namespaced_stateful_set(
                namespace, label_selector=selector
            ).items,
            "Services": cluster.core.list_namespaced_service(namespace, label_selector=selector).items,
            "PDBs": client.PolicyV1Api(cluster.api_client)
            .list_namespaced_pod_disruption_budget(namespace, label_selector=selector)
            .items,
            "pods": service_pods(cluster, namespace, "gone"),
        }
        left = {kind: [o.metadata.name for o in objs] for kind, objs in remaining.items() if objs}
        if left:
            raise AssertionError(f"still there: {left}")
        return True

    def service_gone() -> bool:
        try:
            read(cluster, namespace, "gone")
        except ApiException as e:
            if e.status == 404:
                return True
            raise GiveUpError(f"reading the InferenceService failed: {e}") from e
        return False

    wait_for(service_gone, timeout=60, what="the InferenceService to be deleted (its finalizer removed)")
    # The engine exits on SIGTERM at once when idle, so its pods go well before the 30 s grace.
    wait_for(all_gone, timeout=120, what="the Deployment, Service, PDB and pods to be collected", interval=1)
