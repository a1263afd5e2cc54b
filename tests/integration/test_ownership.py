"""A tenant cannot reserve GPUs with forged objects, nor take over objects through child names
(issue 13, items 4, 5 and 6), on the real local cluster."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from prometheus_client import REGISTRY

from inferfleet.api import InferenceServiceSpec
from inferfleet.kube.apply import NameConflictError, apply_child
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.children import Owner, build_service
from inferfleet.planning.groups import PLACEMENT_DOMAIN_ANNOTATION, PLACEMENT_NODES_ANNOTATION
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL
from tests.conftest import Cluster
from tests.integration.test_groups import service_405b
from tests.integration.test_reconcile import (
    GROUP,
    PLURAL,
    VERSION,
    create,
    events_for,
    small_service,
    wait_ready,
    wait_ready_reason,
)
from tests.support import H100, status_condition, wait_for_idle_h100

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"attacker-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # Deleted now, not with the namespace: later GPU tests wait for no inferfleet-labelled group.
    cluster.apps.delete_collection_namespaced_stateful_set(name)
    cluster.core.delete_namespace(name)


def forged_group(name: str, service: str, nodes: list[str]) -> dict[str, Any]:
    """A replicas: 0 StatefulSet that looks like a replica group holding `nodes` (8 GPUs each)."""
    labels = {SERVICE_LABEL: service, REPLICA_LABEL: "0"}
    annotations = {PLACEMENT_NODES_ANNOTATION: ",".join(nodes), PLACEMENT_DOMAIN_ANNOTATION: "rack-a"}
    container = {"name": "engine", "image": "registry.example/engine:1",
                 "resources": {"limits": {"nvidia.com/gpu": "8"}}}  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [container]},
            },
        },
    }


def test_a_forged_group_in_another_namespace_reserves_no_gpus_for_anyone(
    cluster: Cluster, namespace: str, other_namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    wait_for_idle_h100(cluster.core, cluster.apps)
    h100 = sorted(
        n.metadata.name for n in cluster.core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items
    )
    # Every H100 node "reserved" by an object anyone with StatefulSet rights in a namespace can write.
    cluster.apps.create_namespaced_stateful_set(other_namespace, forged_group("squat-g0", "squat", h100))
    run_operator()  # cluster-wide: it sees the forged group

    create(cluster, namespace, service_405b("victim"))
    obj = wait_ready(cluster, namespace, "victim", timeout=120)
    assert status_condition(obj, "Placed")["reason"] == "AllReplicasPlaced"
    [placement] = obj["status"]["placement"]
    assert set(placement["nodes"]) <= set(h100)


def foreign_service(name: str) -> client.V1Service:
    return client.V1Service(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "someone-else"}),
        spec=client.V1ServiceSpec(selector={"app": "someone-else"}, ports=[client.V1ServicePort(port=9090)]),
    )


def foreign_deployment(name: str) -> client.V1Deployment:
    labels = {"app": "someone-else"}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="app", image="registry.example/app:1")]
                ),
            ),
        ),
    )


def settled(deployment: client.V1Deployment) -> bool:
    """The Deployment controller wrote its last status for a Deployment of 0 replicas."""
    status = deployment.status
    progressing = [c for c in (status.conditions or []) if c.type == "Progressing"]
    return status.observed_generation == deployment.metadata.generation and any(
        c.reason == "NewReplicaSetAvailable" for c in progressing
    )


def delete_service_and_wait(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def gone() -> bool:
        try:
            cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=30, what=f"InferenceService {name} deleted")


@pytest.mark.parametrize("kind", ["Service", "Deployment"])
def test_a_child_name_taken_by_someone_elses_object_is_a_name_conflict_and_the_object_is_untouched(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess], kind: str
) -> None:
    name = "taken"
    if kind == "Service":
        cluster.core.create_namespaced_service(namespace, foreign_service(name))
        read: Callable[[], Any] = lambda: cluster.core.read_namespaced_service(name, namespace)  # noqa: E731
    else:
        cluster.apps.create_namespaced_deployment(namespace, foreign_deployment(name))
        read = lambda: cluster.apps.read_namespaced_deployment(name, namespace)  # noqa: E731
        wait_for(lambda: settled(read()), timeout=30, what="the Deployment controller done with it")
    before = cluster.api_client.sanitize_for_serialization(read())
    run_operator(namespaces=[namespace])

    create(cluster, namespace, small_service(name))
    ready = wait_ready_reason(cluster, namespace, name, "NameConflict", timeout=60)
    assert ready["status"] == "False"
    assert ready["message"] == (
        f"{kind} {name} already exists and is not controlled by this InferenceService; "
        f"it is left untouched (rename the service or remove that {kind})"
    )
    warnings = wait_for(
        lambda: [e for e in events_for(cluster, namespace, name) if e.reason == "NameConflict"],
        timeout=30,
        what="a NameConflict Event",
    )
    assert warnings[0].type == "Warning"
    assert warnings[0].message == ready["message"]

    after = cluster.api_client.sanitize_for_serialization(read())
    assert after["metadata"] == before["metadata"]  # resourceVersion, labels, owners, managedFields
    assert after["spec"] == before["spec"]

    delete_service_and_wait(cluster, namespace, name)
    left = cluster.api_client.sanitize_for_serialization(read())
    assert left["metadata"]["uid"] == before["metadata"]["uid"]
    assert left["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_child_the_api_server_refuses_says_why_in_the_api_servers_words(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-services"),
        spec=client.V1ResourceQuotaSpec(hard={"services": "0"}),
    )
    cluster.core.create_namespaced_resource_quota(namespace, quota)
    wait_for(
        lambda: cluster.core.read_namespaced_resource_quota("no-services", namespace).status.hard or None,
        timeout=30,
        what="the quota's status",
    )
    run_operator(namespaces=[namespace])

    create(cluster, namespace, small_service("quota"))
    ready = wait_ready_reason(cluster, namespace, "quota", "ApplyFailed", timeout=60)
    assert ready["message"] == (
        'applying Service quota was refused (403): services "quota" is forbidden: exceeded quota: '
        "no-services, requested: services=1, used: services=0, limited: services=0"
    )


def owner_of(cluster: Cluster, namespace: str, name: str) -> tuple[Owner, InferenceServiceSpec]:
    """An InferenceService (no operator runs: the test is the only writer of its children)."""
    body = create(cluster, namespace, small_service(name))
    meta = body["metadata"]
    return Owner(meta["name"], meta["namespace"], meta["uid"]), InferenceServiceSpec.model_validate(
        body["spec"]
    )


def writes(verb: str, kind: str) -> float:
    return REGISTRY.get_sample_value("inferfleet_kube_writes_total", {"verb": verb, "kind": kind}) or 0.0


def ours(obj: dict[str, Any]) -> list[tuple[str, str]]:
    entries = obj["metadata"].get("managedFields") or []
    return [(m["manager"], m["operation"]) for m in entries if m["manager"] == "inferfleet"]


def test_a_new_child_is_created_in_one_request_and_a_later_apply_removes_what_it_leaves_out(
    cluster: Cluster, namespace: str
) -> None:
    owner, spec = owner_of(cluster, namespace, "fresh")
    child = build_service(owner, spec)
    child["metadata"]["labels"]["extra"] = "1"
    before = (writes("create", "Service"), writes("patch", "Service"), writes("apply", "Service"))
    created = apply_child(cluster.api_client, child, owner.uid, known=False)
    after = (writes("create", "Service"), writes("patch", "Service"), writes("apply", "Service"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 0, 0]  # one request
    assert ours(created) == [("inferfleet", "Apply")]

    del child["metadata"]["labels"]["extra"]
    apply_child(cluster.api_client, child, owner.uid, known=True)
    stored = cluster.core.read_namespaced_service("fresh", namespace)
    assert "extra" not in stored.metadata.labels


def test_a_child_an_earlier_version_posted_is_handed_over_so_a_later_apply_removes_fields(
    cluster: Cluster, namespace: str
) -> None:
    owner, spec = owner_of(cluster, namespace, "posted")
    child = build_service(owner, spec)
    child["metadata"]["labels"]["extra"] = "1"
    cluster.core.create_namespaced_service(namespace, child, field_manager="inferfleet")  # 12-05's POST

    del child["metadata"]["labels"]["extra"]
    apply_child(cluster.api_client, child, owner.uid, known=False)  # name taken, by its own child
    stored = cluster.api_client.sanitize_for_serialization(
        cluster.core.read_namespaced_service("posted", namespace)
    )
    assert ours(stored) == [("inferfleet", "Apply")]
    assert "extra" not in stored["metadata"]["labels"]


def test_creating_a_child_over_someone_elses_object_changes_nothing(cluster: Cluster, namespace: str) -> None:
    owner, spec = owner_of(cluster, namespace, "squatted")
    cluster.core.create_namespaced_service(namespace, foreign_service("squatted"))
    before = cluster.api_client.sanitize_for_serialization(
        cluster.core.read_namespaced_service("squatted", namespace)
    )
    with pytest.raises(NameConflictError):
        apply_child(cluster.api_client, build_service(owner, spec), owner.uid, known=False)
    after = cluster.api_client.sanitize_for_serialization(
        cluster.core.read_namespaced_service("squatted", namespace)
    )
    assert after["metadata"] == before["metadata"]  # resourceVersion, labels, owners, managedFields
    assert after["spec"] == before["spec"]
