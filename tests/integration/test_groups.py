"""Models too big for one node run as whole replica groups, placed all-or-nothing inside one domain."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from inferfleet.localcluster.inventory import build_node, load_inventory
from inferfleet.localcluster.operator_process import OperatorProcess
from inferfleet.localcluster.waiting import wait_for
from inferfleet.planning.inventory import build_gpu_node
from inferfleet.planning.placement import GroupPlacement, compute_free_gpus, plan_group_placement
from tests.conftest import Cluster
from tests.integration.test_reconcile import (
    EXAMPLES,
    GROUP,
    PLURAL,
    VERSION,
    create,
    example,
    patch_spec,
    read,
    small_service,
    wait_ready,
    wait_ready_reason,
)
from tests.support import (
    H100,
    RESTRICTED_SECURITY_CONTEXT,
    gpu_pod,
    restricted_namespace,
    status_condition,
    wait_for_idle_h100,
    wait_for_idle_nodes,
)

pytestmark = pytest.mark.usefixtures("crds_installed")

RACK = "inferfleet.io/rack"
A100 = "NVIDIA-A100-SXM4-40GB"
NOT_READY = "node-not-ready.stage.kwok.x-k8s.io"
MAINTENANCE = {"key": "example.com/maintenance", "value": "true", "effect": "NoSchedule"}


@pytest.fixture
def operator(cluster: Cluster, run_operator: Callable[..., OperatorProcess]) -> OperatorProcess:
    wait_for_idle_h100(cluster.core, cluster.apps)
    # Cluster-wide: placement counts the GPUs of every pod bound to a node, in any namespace.
    return run_operator()


def service_405b(name: str, replicas: int = 1) -> dict[str, Any]:
    body = example("llama-3.1-405b-vllm.yaml")
    body["metadata"] = {"name": name}
    body["spec"]["replicas"] = replicas
    return body


def group_pods(cluster: Cluster, namespace: str, name: str) -> list[client.V1Pod]:
    pods = cluster.core.list_namespaced_pod(namespace, label_selector=f"inferfleet.io/service={name}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def h100_racks(cluster: Cluster) -> dict[str, list[str]]:
    racks: dict[str, list[str]] = {}
    for node in cluster.core.list_node(label_selector=f"nvidia.com/gpu.product={H100}").items:
        racks.setdefault(node.metadata.labels[RACK], []).append(node.metadata.name)
    return racks


def test_a_405b_replica_runs_as_one_group_of_two_pods_on_two_nodes_of_one_rack(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, service_405b("big"))
    obj = wait_ready(cluster, namespace, "big", timeout=120)

    [placement] = obj["status"]["placement"]
    assert obj["status"]["shardPlan"]["layout"] == "8x2"
    assert status_condition(obj, "Placed")["status"] == "True"
    pods = group_pods(cluster, namespace, "big")
    assert sorted(p.spec.node_name for p in pods) == sorted(placement["nodes"])
    racks = {cluster.core.read_node(p.spec.node_name).metadata.labels[RACK] for p in pods}
    assert racks == {placement["domain"]}
    for pod in pods:
        assert pod.spec.containers[0].resources.limits == {"nvidia.com/gpu": "8"}
        args = pod.spec.containers[0].args
        assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    service = cluster.core.read_namespaced_service("big", namespace)
    assert service.spec.selector["apps.kubernetes.io/pod-index"] == "0"  # only the leader serves HTTP

    example_file = EXAMPLES / "llama-3.1-405b-vllm.yaml"
    planned = subprocess.run([sys.executable, "-m", "inferfleet", "plan", "-o", "json", str(example_file)],
                             capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(planned.stdout)["shardPlan"] == obj["status"]["shardPlan"]


def test_groups_that_cannot_fit_hold_no_gpus_and_are_placed_when_capacity_frees(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    racks = h100_racks(cluster)
    whole_racks = sum(1 for nodes in racks.values() if len(nodes) >= 2)
    create(cluster, namespace, service_405b("fill", replicas=whole_racks))
    filled = wait_ready(cluster, namespace, "fill", timeout=180)
    assert len({p["domain"] for p in filled["status"]["placement"]}) == whole_racks

    create(cluster, namespace, service_405b("waits"))

    def waiting() -> dict[str, Any] | None:
        obj = read(cluster, namespace, "waits")
        return obj if status_condition(obj, "Placed").get("reason") == "InsufficientCapacity" else None

    obj = wait_for(waiting, timeout=60, what="Placed=False InsufficientCapacity")
    assert obj["status"]["phase"] == "Placing"
    assert (
        "needs 2 nodes with 8 free NVIDIA-H100-80GB-HBM3 GPUs in one inferfleet.io/rack"
        in (status_condition(obj, "Placed")["message"])
    )
    assert group_pods(cluster, namespace, "waits") == []  # no half group holding GPUs

    patch_spec(cluster, namespace, "fill", {"replicas": whole_racks - 1})
    obj = wait_ready(cluster, namespace, "waits", timeout=120)
    assert status_condition(obj, "Placed")["status"] == "True"
    assert len(group_pods(cluster, namespace, "waits")) == 2


@pytest.fixture
def lost_nodes(cluster: Cluster) -> Iterator[list[str]]:
    lost: list[str] = []
    yield lost
    for name in lost:
        cluster.core.patch_node(name, {"metadata": {"labels": {NOT_READY: None}}})

    def ready_again() -> bool:
        return all(
            any(c.type == "Ready" and c.status == "True" for c in cluster.core.read_node(n).status.conditions)
            for n in lost
        )

    wait_for(ready_again, timeout=60, what="the lost nodes to come back")


def test_losing_a_node_restarts_the_whole_group_on_healthy_nodes(
    cluster: Cluster, namespace: str, operator: OperatorProcess, lost_nodes: list[str]
) -> None:
    create(cluster, namespace, service_405b("survivor"))
    obj = wait_ready(cluster, namespace, "survivor", timeout=120)
    [before] = obj["status"]["placement"]
    victim = before["nodes"][1]
    lost_nodes.append(victim)
    cluster.core.patch_node(victim, {"metadata": {"labels": {NOT_READY: "true"}}})

    def replaced() -> dict[str, Any] | None:
        current = read(cluster, namespace, "survivor")
        placement = current["status"].get("placement") or []
        moved = placement and victim not in placement[0]["nodes"]
        return current if moved and current["status"].get("phase") == "Ready" else None

    after = wait_for(replaced, timeout=120, what="the group to be placed again without the lost node")
    [placement] = after["status"]["placement"]
    pods = group_pods(cluster, namespace, "survivor")
    assert sorted(p.spec.node_name for p in pods) == sorted(placement["nodes"])
    assert victim not in {p.spec.node_name for p in pods}


def test_losing_the_node_of_a_single_pod_replica_replaces_it_on_a_healthy_node(
    cluster: Cluster, namespace: str, operator: OperatorProcess, lost_nodes: list[str]
) -> None:
    create(cluster, namespace, small_service("solo"))
    wait_ready(cluster, namespace, "solo")
    [pod] = group_pods(cluster, namespace, "solo")
    victim = pod.spec.node_name
    lost_nodes.append(victim)
    cluster.core.patch_node(victim, {"metadata": {"labels": {NOT_READY: "true"}}})

    # Without the operator the pod would wait out the default 300 s not-ready toleration.
    def replaced() -> client.V1Pod | None:
        pods = [p for p in group_pods(cluster, namespace, "solo") if p.metadata.uid != pod.metadata.uid]
        ready = [
            p
            for p in pods
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready[0] if ready else None

    new = wait_for(replaced, timeout=60, what="a Ready replacement pod on another node")
    assert new.spec.node_name != victim

    def placed_on_the_new_node() -> bool:
        placement = read(cluster, namespace, "solo").get("status", {}).get("placement")
        return [p["nodes"] for p in placement or []] == [[new.spec.node_name]]

    wait_for(placed_on_the_new_node, timeout=30, what="status.placement to show the new node only")
    assert wait_ready(cluster, namespace, "solo")["status"]["readyReplicas"] == 1


def test_deleting_a_multi_node_service_removes_its_groups(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, service_405b("short"))
    wait_ready(cluster, namespace, "short", timeout=120)
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "short")
    wait_for(
        lambda: (
            not cluster.apps.list_namespaced_stateful_set(namespace).items
            and not group_pods(cluster, namespace, "short")
        ),
        timeout=60,
        what="the StatefulSets and pods to be collected",
    )


def test_deleting_one_worker_restarts_the_whole_group(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    create(cluster, namespace, service_405b("together"))
    wait_ready(cluster, namespace, "together", timeout=120)
    before = {p.metadata.uid for p in group_pods(cluster, namespace, "together")}
    assert len(before) == 2
    worker = next(p for p in group_pods(cluster, namespace, "together") if p.metadata.name.endswith("-1"))
    cluster.core.delete_namespaced_pod(worker.metadata.name, namespace)

    def restarted_whole() -> bool:
        pods = group_pods(cluster, namespace, "together")
        ready = all(
            any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods
        )
        return len(pods) == 2 and ready and not ({p.metadata.uid for p in pods} & before)

    wait_for(restarted_whole, timeout=120, what="both pods of the group to be replaced and ready")
    wait_ready(cluster, namespace, "together", timeout=60)


@pytest.fixture
def foreign_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"foreign-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name)


def predicted_group_nodes(cluster: Cluster) -> tuple[str, ...]:
    """Where the operator, seeing no pod, will put one 405B group: the product's own planner."""
    nodes = [n for n in (build_gpu_node(cluster.api_client.sanitize_for_serialization(x))
                         for x in cluster.core.list_node().items) if n is not None]  # fmt: skip
    free = compute_free_gpus(nodes, H100, RACK, [], [])
    plan = plan_group_placement(free, 2, 8, product=H100, topology_key=RACK)
    assert isinstance(plan, GroupPlacement)
    return plan.nodes


def test_a_planned_node_taken_by_a_pod_the_operator_cannot_see_is_avoided_and_the_group_placed_elsewhere(
    cluster: Cluster,
    namespace: str,
    foreign_namespace: str,
    run_operator: Callable[..., OperatorProcess],
) -> None:
    wait_for_idle_h100(cluster.core, cluster.apps)
    taken = predicted_group_nodes(cluster)[0]
    # A pod in a namespace this operator does not watch holds every GPU of that node.
    foreign = gpu_pod("squatter", 8, H100)
    foreign.spec.node_name = taken
    cluster.core.create_namespaced_pod(foreign_namespace, foreign)
    run_operator(namespaces=[namespace])  # watches only its namespace: blind to the squatter

    create(cluster, namespace, service_405b("elsewhere"))
    obj = wait_ready(cluster, namespace, "elsewhere", timeout=180)
    [placement] = obj["status"]["placement"]
    assert taken not in placement["nodes"]
    pods = group_pods(cluster, namespace, "elsewhere")
    assert sorted(p.spec.node_name for p in pods) == sorted(placement["nodes"])


def test_with_the_binpack_profile_a_one_gpu_replica_fills_a_partly_used_node(
    cluster: Cluster,
    namespace: str,
    foreign_namespace: str,
    run_operator: Callable[..., OperatorProcess],
) -> None:
    nodes = wait_for_idle_nodes(cluster.core, A100)
    partly_used = nodes[-1]
    other = gpu_pod("seven-gpus", 7, A100)
    other.spec.node_name = partly_used
    cluster.core.create_namespaced_pod(foreign_namespace, other)
    # The local scheduler's `inferfleet-binpack` profile scores nvidia.com/gpu MostAllocated; the
    # default profile (LeastAllocated) would pick one of the empty nodes.
    run_operator(namespaces=[namespace], extra_args=["--scheduler-name", "inferfleet-binpack"])
    create(cluster, namespace, small_service("packed", product=A100))
    wait_ready(cluster, namespace, "packed")
    [pod] = group_pods(cluster, namespace, "packed")
    assert pod.spec.scheduler_name == "inferfleet-binpack"
    assert pod.spec.node_name == partly_used


@pytest.fixture
def extra_rack(cluster: Cluster) -> Iterator[Callable[..., list[str]]]:
    added: list[str] = []

    def add(taints: list[dict[str, str]] | None = None) -> list[str]:
        inventory = load_inventory()
        for i in (1, 2):
            node = build_node(f"h100-d-{i}", inventory.pools["h100"], "zone-d", "rack-d1", inventory)
            node["spec"]["taints"] = node["spec"].get("taints", []) + (taints or [])
            cluster.core.create_node(node)
            added.append(node["metadata"]["name"])
        return added

    yield add
    for name in added:
        cluster.core.delete_node(name)


def test_a_group_waiting_for_capacity_is_placed_when_nodes_are_added_and_released(
    cluster: Cluster, namespace: str, operator: OperatorProcess, extra_rack: Callable[..., list[str]]
) -> None:
    whole_racks = sum(1 for nodes in h100_racks(cluster).values() if len(nodes) >= 2)
    create(cluster, namespace, service_405b("two", replicas=whole_racks + 1))

    def one_short() -> dict[str, Any] | None:
        obj = read(cluster, namespace, "two")
        placed = status_condition(obj, "Placed")
        full = obj.get("status", {}).get("readyReplicas") == whole_racks
        return obj if full and placed.get("reason") == "InsufficientCapacity" else None

    obj = wait_for(one_short, timeout=180, what=f"{whole_racks} groups Ready and one waiting for capacity")
    assert f"replica {whole_racks}:" in status_condition(obj, "Placed")["message"]
    assert not [
        p for p in group_pods(cluster, namespace, "two") if p.metadata.name.startswith(f"two-g{whole_racks}-")
    ]

    # The platform team adds a rack and keeps it tainted while preparing it: Ready, but no place
    # for engine pods (nor is the node.kubernetes.io/not-ready taint a new node carries at first).
    new_nodes = extra_rack(taints=[MAINTENANCE])

    def ready(name: str) -> bool:
        conditions = cluster.core.read_node(name).status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    wait_for(lambda: all(ready(n) for n in new_nodes), timeout=60, what="the new nodes Ready")
    assert not [p for p in group_pods(cluster, namespace, "two") if p.spec.node_name in new_nodes]
    for name in new_nodes:  # released; no user action on the InferenceService
        taints = [
            {"key": t.key, "value": t.value, "effect": t.effect}
            for t in cluster.core.read_node(name).spec.taints
            if t.key != MAINTENANCE["key"]
        ]
        cluster.core.patch_node(name, {"spec": {"taints": taints}})
    placed = wait_ready(cluster, namespace, "two", timeout=120)
    assert status_condition(placed, "Placed")["status"] == "True"
    last = next(p for p in placed["status"]["placement"] if p["replica"] == whole_racks)
    assert sorted(last["nodes"]) == sorted(new_nodes)


def test_a_group_whose_pods_are_refused_reports_why_and_is_admitted_with_a_security_context(
    cluster: Cluster, run_operator: Callable[..., OperatorProcess]
) -> None:
    wait_for_idle_h100(cluster.core, cluster.apps)
    namespace = restricted_namespace(cluster.core, "restricted-groups")
    try:
        run_operator()
        create(cluster, namespace, service_405b("locked"))

        ready = wait_ready_reason(cluster, namespace, "locked", "PodCreationFailed")
        assert ready["message"].startswith("0/1 replicas ready; replica group 0: Create Pod locked-g0-0 ")
        assert 'violates PodSecurity "restricted:latest"' in ready["message"]
        assert group_pods(cluster, namespace, "locked") == []

        patch_spec(cluster, namespace, "locked", {"engine": {"securityContext": RESTRICTED_SECURITY_CONTEXT}})
        obj = wait_ready(cluster, namespace, "locked", timeout=120)
        assert status_condition(obj, "Ready")["reason"] == "AllReplicasReady"
        pods = group_pods(cluster, namespace, "locked")
        assert len(pods) == 2
        assert all(p.spec.containers[0].security_context.run_as_non_root for p in pods)
    finally:
        cluster.core.delete_namespace(namespace)


def test_a_group_runs_on_a_dedicated_tainted_rack_when_its_service_tolerates_the_taint(
    cluster: Cluster, namespace: str, operator: OperatorProcess, extra_rack: Callable[..., list[str]]
) -> None:
    dedicated = {"key": "example.com/dedicated", "value": "llm", "effect": "NoSchedule"}
    new_nodes = extra_rack(taints=[dedicated])
    body = service_405b("dedicated")
    body["spec"]["scheduling"] = {"nodeSelector": {RACK: "rack-d1"}, "tolerations": [dedicated]}
    create(cluster, namespace, body)

    def statefulset_uid() -> str:
        [sts] = cluster.apps.list_namespaced_stateful_set(namespace).items
        return str(sts.metadata.uid)

    first = wait_for(statefulset_uid, timeout=90, what="the replica group's StatefulSet")
    obj = wait_ready(cluster, namespace, "dedicated", timeout=120)
    [placement] = obj["status"]["placement"]
    assert sorted(placement["nodes"]) == sorted(new_nodes)
    assert sorted(p.spec.node_name for p in group_pods(cluster, namespace, "dedicated")) == sorted(new_nodes)
    # A tolerated taint is not a lost node: the group was never restarted.
    assert statefulset_uid() == first
