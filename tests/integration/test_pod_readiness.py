"""Pod readiness as a kubelet decides it: by the readinessProbe in the pod's spec, not a timer.

In the namespace of a test with `pod_engines` the local cluster leaves readiness to PodEngines
(tests/podengines.py), which runs the probe the operator wrote against the engine at the pod's
IP; everywhere else KWOK marks pods Ready on its timer, as before. The session runs in a private
network where the pod range is local.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from kubernetes import client

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.pod_engines import PodEngines
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.names import SERVICE_LABEL
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
