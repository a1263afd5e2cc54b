"""Where the cluster serves the Gateway API Inference Extension, each service gets an InferencePool.

The CRD is a stand-in written from the extension's published v1 API
(inferfleet/localcluster/inferencepool-crd.yaml); the operator runs with the chart's RBAC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

import inferfleet.localcluster
from inferfleet import api
from inferfleet.localcluster.crds import install_crd_files
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.inference_pool import API_GROUP, API_VERSION, CRD_NAME, PLURAL
from tests.conftest import Cluster
from tests.integration.test_groups import group_pods, service_405b
from tests.integration.test_reconcile import create, engine_pods, events_for, read, small_service, wait_ready
from tests.support import wait_for_idle_h100

pytestmark = pytest.mark.usefixtures("crds_installed")
CRD = Path(inferfleet.localcluster.__file__).with_name("inferencepool-crd.yaml")


@contextmanager
def pool_api(cluster: Cluster) -> Iterator[None]:
    """The stand-in InferencePool CRD for one test, deleted (with every pool) after it. A cluster
    that has the API installed already (INFERFLEET_TEST_KUBECONFIG) is not touched: skipped."""
    try:
        cluster.ext.read_custom_resource_definition(CRD_NAME)
        pytest.skip(f"{CRD_NAME} is installed in this cluster; the test would replace and delete it")
    except ApiException as e:
        if e.status != 404:
            raise
    install_crd_files(cluster.api_client, [CRD])
    try:
        yield
    finally:
        cluster.ext.delete_custom_resource_definition(CRD_NAME)
        wait_for(lambda: not _crd_exists(cluster), timeout=60, what=f"{CRD_NAME} deleted")


def _crd_exists(cluster: Cluster) -> bool:
    try:
        cluster.ext.read_custom_resource_definition(CRD_NAME)
    except ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def read_pool(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        pool: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, name
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return pool


def test_a_service_gets_a_pool_of_its_engine_pods_deleted_with_it(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    with pool_api(cluster):
        run_operator(namespaces=[namespace])
        create(cluster, namespace, small_service("chat"))
        service = wait_ready(cluster, namespace, "chat")
        pool = wait_for(lambda: read_pool(cluster, namespace, "chat"), timeout=60, what="the InferencePool")
        # the same pods as the service's own Service, on the engine's port
        selector = cluster.core.read_namespaced_service("chat", namespace).spec.selector
        assert pool["spec"]["selector"] == {"matchLabels": selector}
        matched = cluster.core.list_namespaced_pod(
            namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
        )
        serving = {p.metadata.name for p in engine_pods(cluster, namespace, "chat")}
        assert {p.metadata.name for p in matched.items if p.metadata.deletion_timestamp is None} == serving
        assert len(serving) == service["spec"]["replicas"]
        assert pool["spec"]["targetPorts"] == [{"number": service["spec"]["engine"]["port"]}]
        assert pool["spec"]["endpointPickerRef"] == {
            "group": "",
            "kind": "Service",
            "name": "chat-epp",
            "port": {"number": 9002},
            "failureMode": "FailClose",
        }
        [owner] = pool["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "InferenceService",
            service["metadata"]["uid"],
            True,
        )
        cluster.custom.delete_namespaced_custom_object(api.GROUP, api.VERSION, namespace, api.PLURAL, "chat")
        wait_for(lambda: read_pool(cluster, namespace, "chat") is None, timeout=60, what="the pool collected")


def test_the_api_installed_after_the_service_gets_it_a_pool_at_once(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    """Not after the discovery answer's minute, nor only at the next spec change: the CRD's own
    events make every service look again."""
    run_operator(namespaces=[namespace])
    create(cluster, namespace, small_service("chat"))
    wait_ready(cluster, namespace, "chat")
    with pool_api(cluster):
        wait_for(lambda: read_pool(cluster, namespace, "chat"), timeout=30, what="the InferencePool")


def test_a_pool_of_that_name_not_ours_is_left_alone_and_the_service_serves(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    """A platform's own pool (the extension's chart makes one) is never taken over."""
    theirs = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "InferencePool",
        "metadata": {"name": "chat"},
        "spec": {
            "selector": {"matchLabels": {"app": "their-vllm"}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": "their-epp", "port": {"number": 9002}},
        },
    }
    with pool_api(cluster):
        cluster.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, theirs)
        run_operator(namespaces=[namespace])
        create(cluster, namespace, small_service("chat"))
        wait_ready(cluster, namespace, "chat")

        def warning() -> str | None:
            events = events_for(cluster, namespace, "chat")
            return next((e.message for e in events if e.reason == "InferencePoolNotApplied"), None)

        assert "already exists and is not controlled" in wait_for(warning, timeout=60, what="a Warning Event")
        pool = read_pool(cluster, namespace, "chat")
        assert pool is not None
        assert pool["spec"]["selector"] == {"matchLabels": {"app": "their-vllm"}}
        assert "ownerReferences" not in pool["metadata"]
        assert read(cluster, namespace, "chat")["status"]["phase"] == "Ready"


def test_a_multi_node_replica_is_in_its_pool_by_its_leader_only(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    """Workers of a group serve no HTTP: a gateway routing by the pool must reach the leader."""
    wait_for_idle_h100(cluster.core, cluster.apps)
    with pool_api(cluster):
        run_operator()  # cluster-wide: placement counts every GPU
        create(cluster, namespace, service_405b("big"))
        wait_ready(cluster, namespace, "big", timeout=120)
        pool = wait_for(lambda: read_pool(cluster, namespace, "big"), timeout=60, what="the InferencePool")
        selector = ",".join(f"{k}={v}" for k, v in pool["spec"]["selector"]["matchLabels"].items())
        selected = [
            p for p in cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
            if p.metadata.deletion_timestamp is None
        ]  # fmt: skip
        assert len(group_pods(cluster, namespace, "big")) == 2  # a leader and a worker on two nodes
        assert [p.metadata.labels["apps.kubernetes.io/pod-index"] for p in selected] == ["0"]
