"""Faults leave the fleet consistent: the operator killed mid-work, the API server restarted, and
the API server answering 429. Nothing orphaned, no half group, no double-booked GPU."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client

from inferfleet.localcluster.binaries import locate_binaries
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from tests.conftest import Cluster
from tests.integration.test_groups import RACK, service_405b
from tests.integration.test_reconcile import create, patch_spec, read, small_service, wait_ready
from tests.rbac import RBAC_SETTLED_AT, ChartIdentity
from tests.support import wait_for_idle_h100

pytestmark = pytest.mark.usefixtures("crds_installed")


def live_statefulsets(cluster: Cluster, namespace: str) -> list[client.V1StatefulSet]:
    items = cluster.apps.list_namespaced_stateful_set(namespace).items
    return [s for s in items if s.metadata.deletion_timestamp is None]


def whole_groups(cluster: Cluster, namespace: str, name: str, replicas: int) -> bool:
    """Exactly `replicas` Ready groups, each of 2 pods on distinct nodes of one rack, and no pod
    that belongs to no current group (orphaned or left from a deleted one)."""
    obj = read(cluster, namespace, name)
    status = obj.get("status", {})
    if status.get("phase") != "Ready" or status.get("readyReplicas") != replicas:
        return False
    sets = live_statefulsets(cluster, namespace)
    if sorted(s.metadata.name for s in sets) != [f"{name}-g{i}" for i in range(replicas)]:
        return False
    uids = {s.metadata.uid for s in sets}
    pods = cluster.core.list_namespaced_pod(namespace).items
    if any({r.uid for r in p.metadata.owner_references or []}.isdisjoint(uids) for p in pods):
        return False
    racks = {n.metadata.name: n.metadata.labels.get(RACK) for n in cluster.core.list_node().items}
    for s in sets:
        members = [p for p in pods if any(r.uid == s.metadata.uid for r in p.metadata.owner_references)]
        nodes = {p.spec.node_name for p in members}
        if len(members) != 2 or len(nodes) != 2 or len({racks.get(n) for n in nodes}) != 1:
            return False
    return True


def assert_no_gpu_double_booked(cluster: Cluster) -> None:
    used: dict[str, int] = {}
    for pod in cluster.core.list_pod_for_all_namespaces().items:
        if pod.spec.node_name and pod.status.phase not in ("Succeeded", "Failed"):
            gpus = sum(
                int((c.resources.requests or {}).get("nvidia.com/gpu", 0)) for c in pod.spec.containers
            )
            used[pod.spec.node_name] = used.get(pod.spec.node_name, 0) + gpus
    for node in cluster.core.list_node().items:
        allocatable = int((node.status.allocatable or {}).get("nvidia.com/gpu", 0))
        assert used.get(node.metadata.name, 0) <= allocatable, node.metadata.name


@pytest.fixture
def idle_h100(cluster: Cluster) -> None:
    wait_for_idle_h100(cluster.core, cluster.apps)


@pytest.mark.usefixtures("idle_h100")
def test_kill_9_while_creating_groups_then_restart_converges_to_whole_groups(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    op = run_operator()  # cluster-wide: placement counts every pod's GPUs
    create(cluster, namespace, service_405b("crash", replicas=2))
    wait_for(lambda: live_statefulsets(cluster, namespace), timeout=60, what="the first group", interval=0.02)
    op.kill()
    assert read(cluster, namespace, "crash").get("status", {}).get("phase") != "Ready"  # really mid-way

    run_operator()
    wait_for(lambda: whole_groups(cluster, namespace, "crash", 2), timeout=180, what="2 whole groups")
    assert_no_gpu_double_booked(cluster)


@pytest.mark.usefixtures("idle_h100")
def test_kill_9_during_a_scale_down_then_restart_leaves_one_group_and_no_orphans(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess]
) -> None:
    op = run_operator()
    create(cluster, namespace, service_405b("shrink", replicas=2))
    wait_for(lambda: whole_groups(cluster, namespace, "shrink", 2), timeout=180, what="2 whole groups")

    patch_spec(cluster, namespace, "shrink", {"replicas": 1})
    wait_for(
        lambda: len(live_statefulsets(cluster, namespace)) == 1,
        timeout=60,
        what="the operator to start removing group 1",
        interval=0.02,
    )
    op.kill()

    run_operator()
    wait_for(lambda: whole_groups(cluster, namespace, "shrink", 1), timeout=120, what="1 whole group")
    assert read(cluster, namespace, "shrink")["status"]["replicas"] == 1
    assert_no_gpu_double_booked(cluster)


def test_an_api_server_restart_mid_reconcile_is_survived_without_an_operator_restart(
    cluster: Cluster,
    namespace: str,
    run_operator: Callable[..., OperatorProcess],
    request: pytest.FixtureRequest,
) -> None:
    if cluster.local is None:
        pytest.skip("restarts the local cluster's API server; not on a cluster given by kubeconfig")
    op = run_operator(namespaces=[namespace])
    pid = op.pid
    create(cluster, namespace, small_service("before"))
    wait_ready(cluster, namespace, "before")

    create(cluster, namespace, small_service("during"))
    cluster.local.stop()  # etcd and every control-plane component, mid reconcile
    cluster.local.start()
    wait_for(lambda: cluster.core.list_node().items, timeout=120, what="the API server to answer again")
    wait_for(lambda: api_server_ready(cluster), timeout=120, what="the API server's /readyz")
    request.node.stash[RBAC_SETTLED_AT] = datetime.now()  # the operator's 403s before this are the cold cache

    patch_spec(cluster, namespace, "before", {"engine": {"image": "vllm/vllm-openai:v0.11.1"}})
    create(cluster, namespace, small_service("after"))
    for name in ("before", "during", "after"):
        wait_ready(cluster, namespace, name, timeout=180)
    deployment = cluster.apps.read_namespaced_deployment("before", namespace)
    assert deployment.spec.template.spec.containers[0].image == "vllm/vllm-openai:v0.11.1"
    assert op.pid == pid  # the same process: it reconnected by itself
    assert op.healthy()


def api_server_ready(cluster: Cluster) -> bool:
    """/readyz passes: among its checks, the informers the RBAC authorizer reads have synced."""
    kubectl = locate_binaries().kubectl
    args = [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "get", "--raw", "/readyz"]
    return subprocess.run(args, capture_output=True, text=True).stdout.strip() == "ok"


FLOW = "inferfleet-test-throttled"
A100 = "NVIDIA-A100-SXM4-40GB"


@pytest.fixture
def throttled_identity(
    cluster: Cluster, chart_identity: ChartIdentity, namespace: str, tmp_path: Path
) -> Iterator[Path]:
    """The chart's ServiceAccount for `namespace`, whose every request goes to a priority level with
    a few seats and no queue: API Priority and Fairness (what the in-flight limits configure)
    answers 429 beyond that."""
    kubeconfig = chart_identity.kubeconfig(tmp_path / "sa.yaml", [namespace])
    account = {"name": chart_identity.service_account([namespace]), "namespace": chart_identity.namespace}
    flow = client.FlowcontrolApiserverV1Api(cluster.api_client)
    flow.create_priority_level_configuration({
        "metadata": {"name": FLOW},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Reject"}}},
    })  # fmt: skip
    flow.create_flow_schema({
        "metadata": {"name": FLOW},
        "spec": {
            "priorityLevelConfiguration": {"name": FLOW},
            "matchingPrecedence": 100,
            "rules": [{
                "subjects": [{"kind": "ServiceAccount", "serviceAccount": account}],
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                   "namespaces": ["*"], "clusterScope": True}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            }],
        },
    })  # fmt: skip
    try:
        yield kubeconfig
    finally:
        for delete in (flow.delete_flow_schema, flow.delete_priority_level_configuration):
            delete(FLOW)


def raw_metrics(cluster: Cluster) -> str:
    kubectl = locate_binaries().kubectl
    args = [str(kubectl), "--kubeconfig", str(cluster.kubeconfig), "get", "--raw", "/metrics"]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def rejected_requests(cluster: Cluster) -> float:
    """The API server's count of requests of our flow it refused (429) for lack of seats."""
    pattern = re.compile(r"^apiserver_flowcontrol_rejected_requests_total\{(.*)\} (\S+)$")
    return sum(
        float(m.group(2))
        for line in raw_metrics(cluster).splitlines()
        if (m := pattern.match(line)) and f'flow_schema="{FLOW}"' in m.group(1)
    )


def operator_metric(op: OperatorProcess, name: str) -> float:
    with urllib.request.urlopen(op.metrics_url, timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_under_api_pressure_the_operator_backs_off_on_429_and_converges(
    cluster: Cluster, namespace: str, run_operator: Callable[..., OperatorProcess], throttled_identity: Path
) -> None:
    before = rejected_requests(cluster)
    op = run_operator(namespaces=[namespace], kubeconfig=throttled_identity, extra_args=["--kube-qps", "100"])
    names = [f"svc-{i}" for i in range(20)]
    for name in names:
        create(cluster, namespace, small_service(name, product=A100))
    for name in names:
        wait_ready(cluster, namespace, name, timeout=240)
    assert op.healthy()
    assert rejected_requests(cluster) > before, "the API server never said 429: no pressure was applied"
    assert operator_metric(op, "inferfleet_kube_api_throttled_total") > 0
