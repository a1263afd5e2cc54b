"""Pod readiness as a kubelet decides it: by the readinessProbe in the pod's spec, not a timer.

In the namespace of a test with `pod_engines` the local cluster leaves readiness to PodEngines
(tests/podengines.py), which runs the probe the operator wrote against the engine at the pod's
IP; everywhere else KWOK marks pods Ready on its timer, as before. The session runs in a private
network where the pod range is local.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from inferfleet.api import InferenceServiceSpec
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.pod_engines import PodEngines
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.children import build_cached_pod
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.planning.weights_jobs import CacheSettings, build_fetch_job
from inferfleet.planning.weights_naming import compute_cache_key, compute_ref_file
from inferfleet.planning.weights_volume import build_cache_claim, build_cache_volume
from tests.conftest import Cluster
from tests.integration.test_pod_engines import GROUP, PLURAL, VERSION, complete, service_body, slice_endpoints
from tests.support import condition, gpu_pod_spec

pytestmark = pytest.mark.usefixtures("crds_installed")

NAME, MODEL = "probed", "llama-3.1-8b-instruct"


def ready(cluster: Cluster, namespace: str, pod: str) -> bool:
    found = condition(cluster.core.read_namespaced_pod(pod, namespace), "Ready")
    return found is not None and found.status == "True"


def test_a_pod_is_ready_only_while_its_engine_answers_its_readiness_probe(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess], pod_engines: PodEngines
) -> None:
    loaded = threading.Event()
    pod_engines.loading[(namespace, NAME)] = loaded  # its engine loads weights until the test says
    run_operator(namespaces=[namespace])
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, service_body(NAME, 1))

    def failing_probes() -> tuple[str, str] | None:
        pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"{SERVICE_LABEL}={NAME}").items
        probed = [pod_engines.probed(namespace, p.metadata.name) for p in pods]
        return next(((p.name, p.ip) for p in probed if p is not None and p.failed >= 2), None)

    # Running, with an IP and the operator's probe, but nothing answers it yet: not Ready.
    pod, ip = wait_for(failing_probes, timeout=90, what="two failed readiness probes of the service's pod")
    probed = pod_engines.probed(namespace, pod)
    assert probed is not None
    assert probed.passed == 0
    assert not ready(cluster, namespace, pod)
    assert all(not endpoint_ready for _, endpoint_ready, _, _ in slice_endpoints(cluster, namespace, NAME))

    loaded.set()  # the engine listens and answers /health: the next probe passes
    wait_for(
        lambda: (
            ready(cluster, namespace, pod)
            and slice_endpoints(cluster, namespace, NAME) == [(ip, True, True, False)]
            and pod_engines.engine(namespace, pod) is not None  # PodEngines lists it (for crash below)
        ),
        timeout=30,
        what="the pod Ready and its endpoint ready once its engine answers",
    )
    status, reply = complete(ip, 8000, MODEL, max_tokens=2)
    assert (status, reply["model"]) == (200, MODEL)

    uid = cluster.core.read_namespaced_pod(pod, namespace).metadata.uid
    pod_engines.crash(namespace, pod)  # the engine dies; the pod stays
    wait_for(
        lambda: (
            not ready(cluster, namespace, pod)
            and slice_endpoints(cluster, namespace, NAME) == [(ip, False, False, False)]
        ),
        timeout=45,  # failureThreshold (3) probes, periodSeconds (5) apart
        what="the pod not Ready and its endpoint not ready once its engine died",
    )
    assert cluster.core.read_namespaced_pod(pod, namespace).metadata.uid == uid  # the same pod, not deleted
    assert pod_engines.errors == []


def test_a_pod_outside_the_probed_namespaces_is_marked_ready_by_kwok_as_before(
    cluster: Cluster, namespace: str
) -> None:
    """The same cluster, a namespace without PodEngines: no engine anywhere, the pod turns Ready."""
    spec = gpu_pod_spec(1, "NVIDIA-L4")
    [engine] = spec.containers
    engine.ports = [client.V1ContainerPort(name="http", container_port=8000)]
    engine.readiness_probe = client.V1Probe(http_get=client.V1HTTPGetAction(path="/health", port="http"))
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="unprobed", labels={SERVICE_LABEL: "unprobed"}), spec=spec
    )
    assert not namespace.startswith("probed-")
    cluster.core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: ready(cluster, namespace, "unprobed"), timeout=60, what="KWOK to mark the pod Ready")


IMAGE = "ghcr.io/inferfleet/inferfleet:test"
CACHE_ROOT = "/var/lib/inferfleet/models"
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def waiting_pod(body: dict[str, Any]) -> dict[str, Any]:
    """An engine pod as the operator writes it for a cached model: its `wait-for-weights` init
    container waits for the node's copy (planning/children.build_cached_pod)."""
    engine = {
        "name": "engine",
        "image": "registry.example/engine:1",
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
        "resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        "volumeMounts": [],
    }
    spec = {
        "containers": [engine],
        "volumes": [{"name": "model-cache", "emptyDir": {}}],  # the engine's own, the wait mounts it too
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
        "tolerations": GPU_TOLERATIONS,
    }
    cached = build_cached_pod(spec, InferenceServiceSpec.model_validate(body["spec"]), IMAGE)
    return {"metadata": {"name": "waiting", "labels": {SERVICE_LABEL: NAME}}, "spec": cached}


def fetch(cluster: Cluster, namespace: str, body: dict[str, Any], node: str, claim_uid: str) -> None:
    """The operator's fetch Job of the service's source on `node` (KWOK completes its pod)."""
    settings = CacheSettings(root=CACHE_ROOT, image=IMAGE, namespace=namespace)
    spec = InferenceServiceSpec.model_validate(body["spec"])
    job = build_fetch_job(spec, namespace, node, claim_uid, settings, GPU_TOLERATIONS)
    client.BatchV1Api(cluster.api_client).create_namespaced_job(namespace, job)


def test_an_engine_waits_for_its_nodes_copy_of_the_weights_before_it_starts_and_turns_ready(
    cluster: Cluster, namespace: str, pod_engines: PodEngines
) -> None:
    """No operator: the test writes what it would (the service, the cache claim, the fetch Jobs)."""
    body = service_body(NAME, 1)
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)  # the model
    claim = cluster.core.create_namespaced_persistent_volume_claim(namespace, build_cache_claim(namespace))
    uid = claim.metadata.uid
    volume = cluster.core.create_persistent_volume(build_cache_volume(CACHE_ROOT, namespace, uid))
    try:
        run_waiting_pod(cluster, namespace, pod_engines, body, uid)
    finally:
        cluster.core.delete_persistent_volume(volume.metadata.name)


def run_waiting_pod(
    cluster: Cluster, namespace: str, pod_engines: PodEngines, body: dict[str, Any], claim_uid: str
) -> None:
    cluster.core.create_namespaced_pod(namespace, waiting_pod(body))

    def running() -> str | None:
        pod = cluster.core.read_namespaced_pod("waiting", namespace)
        return pod.spec.node_name if pod.status.phase == "Running" and pod.status.pod_ip else None

    node = wait_for(running, timeout=60, what="the pod running with an IP")
    source = body["spec"]["model"]["source"]
    wanted = (namespace, node, compute_cache_key(source), compute_ref_file(source))
    assert (
        wait_for(
            lambda: pod_engines.waiting_for_weights(namespace, "waiting"), timeout=30, what="the pod held"
        )
        == wanted
    )

    # Copies that are not the one it waits for: another model on its node, its model on another node.
    other_node = next(
        n.metadata.name
        for n in cluster.core.list_node(label_selector="nvidia.com/gpu.product=NVIDIA-L4").items
        if n.metadata.name != node
    )
    other_model = json.loads(json.dumps(body))
    other_model["spec"]["model"]["source"] = "hf://other/model"
    fetch(cluster, namespace, other_model, node, claim_uid)
    fetch(cluster, namespace, body, other_node, claim_uid)
    others = {
        (namespace, node, compute_cache_key("hf://other/model"), compute_ref_file("hf://other/model")),
        (namespace, other_node, compute_cache_key(source), compute_ref_file(source)),
    }
    wait_for(lambda: others <= pod_engines.weights_on_nodes(), timeout=60, what="both other fetches complete")
    # Still waiting: no engine at its IP, no probe run (its container has not started), not Ready.
    assert pod_engines.waiting_for_weights(namespace, "waiting") == wanted
    assert pod_engines.engine(namespace, "waiting") is None
    assert pod_engines.probed(namespace, "waiting") is None
    assert not ready(cluster, namespace, "waiting")

    fetch(cluster, namespace, body, node, claim_uid)  # its node's copy
    wait_for(
        lambda: ready(cluster, namespace, "waiting") and pod_engines.engine(namespace, "waiting") is not None,
        timeout=60,
        what="the pod Ready once its node's fetch completed",
    )
    assert wanted in pod_engines.weights_on_nodes()
    assert pod_engines.waiting_for_weights(namespace, "waiting") is None
    ip = cluster.core.read_namespaced_pod("waiting", namespace).status.pod_ip
    status, reply = complete(ip, 8000, MODEL, max_tokens=2)
    assert (status, reply["model"]) == (200, MODEL)
    assert pod_engines.errors == []
