"""A hostile tenant gets nothing through the operator it could not do directly, and hurts no one.

The tenant is a ServiceAccount with rights only in its own namespace (InferenceServices, and the
StatefulSets a namespace admin may create). It tries what issue 13 lists: absurd sizes, reading
another namespace's metrics through scaling.query, forging a GPU reservation, taking over an
object it does not own, and engine pods beyond the installation's policy. Each is refused with
a condition, while a service in another namespace stays Ready and keeps scaling, and the
operator's memory stays bounded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.prometheus import LocalPrometheus
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.integration.test_groups import service_405b
from tests.integration.test_reconcile import (
    GROUP,
    PLURAL,
    VERSION,
    read,
    small_service,
    wait_ready,
    wait_ready_reason,
)
from tests.support import H100, status_condition, token_kubeconfig, wait_for_idle_h100

pytestmark = pytest.mark.usefixtures("crds_installed")

CHART_MEMORY_LIMIT_BYTES = 512 * 2**20
TENANT_RULES = [
    {"apiGroups": ["inferfleet.io"], "resources": ["inferenceservices"], "verbs": ["*"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["*"]},
]


@dataclass
class Tenant:
    namespace: str
    custom: client.CustomObjectsApi
    apps: client.AppsV1Api

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)


def make_namespace(cluster: Cluster, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture
def tenant(cluster: Cluster, namespace: str, tmp_path: Path) -> Tenant:
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "tenant"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "tenant"}, "rules": TENANT_RULES})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "tenant"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": namespace}],
    })  # fmt: skip
    kubeconfig = token_kubeconfig(cluster.core, cluster.kubeconfig, "tenant", namespace, tmp_path / "tenant")
    api = config.new_client_from_config(config_file=str(kubeconfig))
    return Tenant(namespace, client.CustomObjectsApi(api), client.AppsV1Api(api))


@pytest.fixture
def victim(cluster: Cluster) -> Iterator[str]:
    name = make_namespace(cluster, "victim")
    yield name
    cluster.core.delete_namespace(name)


def rss_bytes(op: OperatorProcess) -> int:
    status = Path(f"/proc/{op.pid}/status").read_text()
    [line] = [line for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


def forge_reservation(tenant: Tenant, cluster: Cluster, victim_service: str) -> None:
    """What a namespace admin can create: a StatefulSet of no pods that looks like a replica group
    of `victim_service` holding every H100 node."""
    nodes = ",".join(
        n.metadata.name for n in cluster.core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items
    )
    labels = {"inferfleet.io/service": victim_service, "inferfleet.io/replica": "0", "app": "forged"}
    template = {
        "metadata": {"labels": labels, "annotations": {
            "inferfleet.io/placement-domain": "rack-a1", "inferfleet.io/placement-nodes": nodes}},
        "spec": {"containers": [{"name": "engine", "image": "registry.example/engine:1",
                                 "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
    }  # fmt: skip
    tenant.apps.create_namespaced_stateful_set(tenant.namespace, {
        "metadata": {"name": f"{victim_service}-g0", "labels": labels},
        "spec": {"replicas": 0, "serviceName": victim_service, "selector": {"matchLabels": labels},
                 "template": template},
    })  # fmt: skip


def test_a_hostile_tenant_is_refused_while_another_namespace_keeps_serving_and_scaling(
    cluster: Cluster,
    namespace: str,
    victim: str,
    tenant: Tenant,
    prometheus: LocalPrometheus,
    run_operator: Callable[..., OperatorProcess],
) -> None:
    wait_for_idle_h100(cluster.core, cluster.apps)
    op = run_operator(extra_args=["--prometheus-url", prometheus.url, "--autoscale-interval", "2"])
    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, victim, PLURAL, small_service("steady"))
    wait_ready(cluster, victim, "steady")

    # Item 1: a size past the CRD's ceiling is refused by the API server; one past the
    # installation's limit is a condition, and the object stays small.
    with pytest.raises(ApiException) as refused:
        tenant.create({**small_service("huge"), "spec": {**small_service("huge")["spec"], "replicas": 1001}})
    assert refused.value.status == 422
    assert "spec.replicas" in refused.value.body
    tenant.create(service_405b("absurd", replicas=1000))

    # Item 2: another namespace's metric through scaling.query (custom queries are off here).
    spy = small_service("spy")
    spy["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2, "query": 'max(up{namespace="kube-system"})'}
    tenant.create(spy)

    # Item 4: a forged reservation of every H100 node, then the victim's 405B group.
    forge_reservation(tenant, cluster, "big")

    # Item 5: an object of the same name that the tenant's service does not own.
    shared = cluster.core.create_namespaced_service(namespace, {
        "metadata": {"name": "shared", "labels": {"team": "platform"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": "platform"}},
    })  # fmt: skip
    tenant.create(small_service("shared"))

    # Item 7: engine pods beyond the policy.
    root = small_service("root")
    root["spec"]["engine"]["securityContext"] = {"runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}}
    root["spec"]["scheduling"] = {
        "tolerations": [{"operator": "Exists"}],
        "priorityClassName": "system-cluster-critical",
    }
    tenant.create(root)

    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, victim, PLURAL, service_405b("big"))
    cluster.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, victim, PLURAL, "steady", {"spec": {"replicas": 2}}
    )

    absurd = wait_ready_reason(cluster, namespace, "absurd", "PolicyViolation")
    assert "spec.replicas: 1000 is above this installation's limit of 64" in absurd["message"]
    assert len(str(read(cluster, namespace, "absurd"))) < 16_000

    policy = wait_ready_reason(cluster, namespace, "root", "PolicyViolation")["message"]
    for field in ("runAsUser: 0", "capabilities.add: SYS_ADMIN", "tolerations[0]", "system-cluster-critical"):
        assert field in policy
    assert not cluster.apps.list_namespaced_deployment(
        namespace, label_selector="inferfleet.io/service=root"
    ).items

    conflict = wait_ready_reason(cluster, namespace, "shared", "NameConflict")
    assert "Service" in conflict["message"]
    after = cluster.core.read_namespaced_service("shared", namespace)
    assert after.metadata.resource_version == shared.metadata.resource_version
    assert not after.metadata.owner_references

    def query_refused() -> dict[str, Any]:
        obj = read(cluster, namespace, "spy")
        metrics = status_condition(obj, "MetricsAvailable")
        assert metrics.get("status") == "False", metrics
        assert "customQueries" in metrics.get("message", ""), metrics
        assert "queueDepth" not in obj.get("status", {})
        return metrics

    wait_for(query_refused, timeout=90, what="spy's custom query refused")

    big = wait_ready(cluster, victim, "big", timeout=180)  # the forged reservation held nothing
    assert status_condition(big, "Placed")["status"] == "True"

    def scaled() -> dict[str, Any] | None:
        obj = read(cluster, victim, "steady")
        return obj if obj["status"].get("readyReplicas") == 2 else None

    steady = wait_for(scaled, timeout=90, what="the victim's scale-up to 2 ready replicas")
    assert steady["status"]["phase"] == "Ready"
    assert rss_bytes(op) < CHART_MEMORY_LIMIT_BYTES / 2
    assert op.healthy()

    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "shared")

    def gone() -> bool:
        try:
            read(cluster, namespace, "shared")
        except ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=30, what="the tenant's service deleted")
    assert cluster.core.read_namespaced_service("shared", namespace).metadata.labels == {"team": "platform"}
