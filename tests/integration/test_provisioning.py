"""A replica group that does not fit asks the node autoscaler for all its nodes at once.

The node autoscaler here is a stand-in for cluster-autoscaler's ProvisioningRequest support
(inferfleet.localcluster.node_autoscaler_standin): the Go module proxy refuses
k8s.io/autoscaler/cluster-autoscaler, so the real one cannot be built here. The stand-in answers
best-effort-atomic-scale-up requests by adding every node a request needs in one rack from a
node-group template (KWOK H100 nodes built by the local inventory), or none beyond the group's
maximum, and removes added nodes left empty. It does not model the scheduler simulation,
retries before Failed, or booking expiry; see its docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.node_autoscaler_standin import (
    NodeAutoscalerStandIn,
    NodeGroup,
    install_provisioning_crd,
)
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.provisioning import ATOMIC_CLASS, CONSUME_ANNOTATION
from tests.conftest import Cluster
from tests.integration.test_groups import RACK, group_pods, service_405b
from tests.integration.test_reconcile import create, patch_spec, read, wait_ready
from tests.support import H100, gpu_pod, status_condition, wait_for_idle_h100

pytestmark = pytest.mark.usefixtures("crds_installed")

PR = ("autoscaling.x-k8s.io", "v1", "provisioningrequests")


@pytest.fixture(scope="module")
def provisioning_api(cluster: Cluster) -> Iterator[None]:
    name = install_provisioning_crd(cluster.api_client)
    yield
    cluster.ext.delete_custom_resource_definition(name)


@pytest.fixture
def h100_full(cluster: Cluster, namespace: str) -> list[str]:
    """One GPU taken on every H100 node: none has the 8 free GPUs a 405B group's pod needs."""
    wait_for_idle_h100(cluster.core, cluster.apps)
    nodes = [
        n.metadata.name for n in cluster.core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items
    ]
    for node in nodes:
        pod = gpu_pod(f"filler-{node}", 1, H100)
        pod.spec.node_name = node
        cluster.core.create_namespaced_pod(namespace, pod)
    return nodes


@pytest.fixture
def standin(cluster: Cluster) -> Iterator[Callable[[int], NodeAutoscalerStandIn]]:
    started: list[NodeAutoscalerStandIn] = []

    def start(max_size: int) -> NodeAutoscalerStandIn:
        group = NodeGroup("h100-x", pool="h100", zone="zone-x", rack="rack-x1", max_size=max_size)
        autoscaler = NodeAutoscalerStandIn(cluster.api_client, [group])
        autoscaler.start()
        started.append(autoscaler)
        return autoscaler

    yield start
    for autoscaler in started:
        autoscaler.stop()
        for name in set(autoscaler.added) - set(autoscaler.removed):
            try:
                cluster.core.delete_node(name)
            except ApiException as e:
                if e.status != 404:
                    raise


@pytest.fixture
def operator(
    cluster: Cluster,
    provisioning_api: None,
    h100_full: list[str],
    run_operator: Callable[..., OperatorProcess],
) -> OperatorProcess:
    return run_operator()  # started after the CRD: it watches ProvisioningRequests from the start


def requests_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.custom.list_namespaced_custom_object(*PR[:2], namespace, PR[2])["items"])


def test_a_group_that_does_not_fit_gets_its_nodes_in_one_rack_at_once_and_runs_on_them(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    standin: Callable[[int], NodeAutoscalerStandIn],
) -> None:
    autoscaler = standin(2)
    create(cluster, namespace, service_405b("big"))
    obj = wait_ready(cluster, namespace, "big", timeout=120)

    assert sorted(autoscaler.added) == ["h100-x-1", "h100-x-2"]  # two 8-GPU nodes, no more
    [placement] = obj["status"]["placement"]
    assert sorted(placement["nodes"]) == ["h100-x-1", "h100-x-2"]
    pods = group_pods(cluster, namespace, "big")
    assert sorted(p.spec.node_name for p in pods) == ["h100-x-1", "h100-x-2"]
    assert {cluster.core.read_node(p.spec.node_name).metadata.labels[RACK] for p in pods} == {"rack-x1"}
    assert {p.metadata.annotations[CONSUME_ANNOTATION] for p in pods} == {"big-g0"}
    # The request goes once the group runs.
    wait_for(lambda: not requests_of(cluster, namespace), timeout=30, what="the request deleted once Ready")

    # Scale to zero: the group goes, the request is gone, the nodes it brought are released.
    patch_spec(cluster, namespace, "big", {"replicas": 0})
    wait_for(lambda: not group_pods(cluster, namespace, "big"), timeout=60, what="the group's pods gone")
    wait_for(
        lambda: sorted(autoscaler.removed) == ["h100-x-1", "h100-x-2"],
        timeout=60,
        what="the empty nodes removed",
    )
    assert not requests_of(cluster, namespace)


def test_the_request_asks_for_the_groups_real_pods_and_goes_with_its_service(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """No autoscaler answers: the request waits, and what it asks for is the group's pods."""
    create(cluster, namespace, service_405b("asks"))
    [request] = wait_for(lambda: requests_of(cluster, namespace), timeout=60, what="a ProvisioningRequest")
    assert request["spec"] == {
        "provisioningClassName": ATOMIC_CLASS,
        "podSets": [{"podTemplateRef": {"name": "asks-g0"}, "count": 2}],
    }
    pod = cluster.core.read_namespaced_pod_template("asks-g0", namespace).template.spec
    assert pod.containers[0].resources.limits == {"nvidia.com/gpu": "8"}
    assert pod.node_selector["nvidia.com/gpu.product"] == H100
    [affinity] = pod.affinity.pod_affinity.required_during_scheduling_ignored_during_execution
    assert affinity.topology_key == RACK  # the group's topology constraint

    def asked() -> dict[str, Any] | None:
        placed = status_condition(read(cluster, namespace, "asks"), "Placed")
        return placed if "asks the node autoscaler for 2 nodes at once" in placed.get("message", "") else None

    placed = wait_for(asked, timeout=60, what="Placed says the node autoscaler was asked")
    assert (placed["status"], placed["reason"]) == ("False", "WaitingForNodes")
    assert group_pods(cluster, namespace, "asks") == []

    cluster.custom.delete_namespaced_custom_object(
        "inferfleet.io", "v1alpha1", namespace, "inferenceservices", "asks"
    )
    wait_for(
        lambda: not requests_of(cluster, namespace), timeout=60, what="the request collected with its service"
    )


def test_when_the_autoscaler_cannot_provide_the_nodes_the_status_says_why_and_nothing_is_placed(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    standin: Callable[[int], NodeAutoscalerStandIn],
) -> None:
    autoscaler = standin(1)  # the node group may grow to one node; the group needs two
    create(cluster, namespace, service_405b("nope"))

    def says_why() -> dict[str, Any] | None:
        placed = status_condition(read(cluster, namespace, "nope"), "Placed")
        return placed if "cannot provide them" in placed.get("message", "") else None

    placed = wait_for(says_why, timeout=60, what="Placed says the autoscaler cannot provide the nodes")
    assert (placed["status"], placed["reason"]) == ("False", "NodesUnavailable")
    assert (
        "ProvisioningRequest nope-g0 Failed (CapacityIsNotFound: node group h100-x has 0 of at most 1"
        in (placed["message"])
    )
    assert autoscaler.added == []
    assert group_pods(cluster, namespace, "nope") == []  # no pod pending, nothing half-placed
    assert not cluster.apps.list_namespaced_stateful_set(namespace).items
    pending = [p for p in cluster.core.list_namespaced_pod(namespace).items if p.status.phase == "Pending"]
    assert pending == []
    [request] = requests_of(cluster, namespace)  # kept (not asked again and again) until retried
    assert request["metadata"]["name"] == "nope-g0"
