"""Which services a node or pod event wakes, and which services wait for GPUs."""

from __future__ import annotations

from typing import Any

import pytest

from inferfleet.planning.inventory import GpuNode, Taint
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.wake import (
    PodWake,
    compute_node_lost,
    compute_node_wakes,
    compute_pod_wake,
    compute_waiting_services,
)

pytestmark = pytest.mark.unit

TAINT = Taint("maintenance", "true", "NoSchedule")
TOLERATES = {"scheduling": {"tolerations": [{"key": "maintenance", "operator": "Exists"}]}}
MEMBER = {"inferfleet.io/service": "llama", "inferfleet.io/replica": "1"}
REFUSED = {
    "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"}
    ]
}


def group(service: str, nodes: tuple[str, ...]) -> ObservedGroup:
    return ObservedGroup(
        namespace="ml", service=service, replica=0, uid=f"{service}-0", domain="a", nodes=nodes,
        gpus_per_pod=8, pods=len(nodes), ready_pods=len(nodes), generation=1, observed_generation=1,
    )  # fmt: skip


def node(**kwargs: Any) -> GpuNode:
    return GpuNode("a-1", "NVIDIA-H100-80GB-HBM3", 8, 80.0, {}, **kwargs)


GROUPS = [group("llama", ("a-1", "a-2")), group("mistral", ("a-1",)), group("phi", ("b-1",))]
SPECS: dict[tuple[str, str], dict[str, Any]] = {("ml", "llama"): {}, ("ml", "mistral"): TOLERATES}


@pytest.mark.parametrize(
    ("event", "node", "woken"),
    [
        pytest.param("MODIFIED", node(), [], id="a healthy node's heartbeat wakes nobody"),
        pytest.param("DELETED", None, [("ml", "llama"), ("ml", "mistral")], id="deleted: every group on it"),
        pytest.param("MODIFIED", None, [("ml", "llama"), ("ml", "mistral")], id="no longer a GPU node"),
        pytest.param("MODIFIED", node(ready=False), [("ml", "llama"), ("ml", "mistral")], id="NotReady"),
        pytest.param("MODIFIED", node(cordoned=True), [("ml", "llama"), ("ml", "mistral")], id="cordoned"),
        pytest.param("MODIFIED", node(taints=(TAINT,)), [("ml", "llama")], id="tainted: the tolerant stays"),
    ],
)
def test_a_node_that_no_longer_takes_a_services_pods_wakes_the_services_with_groups_on_it(
    event: str, node: GpuNode | None, woken: list[tuple[str, str]]
) -> None:
    assert compute_node_wakes(event, "a-1", node, GROUPS, SPECS) == woken


def test_a_group_of_a_service_that_is_gone_wakes_nothing() -> None:
    assert compute_node_wakes("DELETED", "a-1", None, GROUPS, {}) == []


@pytest.mark.parametrize(
    ("event", "lost_nodes", "expected"),
    [
        ("DELETED", set(), True),
        ("MODIFIED", {"a-1"}, True),
        ("MODIFIED", {"b-1"}, False),
        (None, set(), False),
    ],
)
def test_a_node_is_lost_when_deleted_or_not_ready(
    event: str | None, lost_nodes: set[str], expected: bool
) -> None:
    assert compute_node_lost(event, "a-1", lost_nodes) is expected


@pytest.mark.parametrize(
    ("event", "labels", "spec", "status", "wake"),
    [
        pytest.param(
            "MODIFIED", MEMBER, {}, REFUSED, PodWake(reconcile=("ml", "llama")), id="refused member"
        ),
        pytest.param("MODIFIED", MEMBER, {"nodeName": "a-1"}, REFUSED, PodWake(), id="bound member"),
        pytest.param(
            "MODIFIED",
            {"inferfleet.io/service": "llama"},
            {},
            REFUSED,
            PodWake(status_of=("ml", "llama")),
            id="a single-pod replica's pod: its service's status, never a group's look",
        ),
        pytest.param(
            "DELETED",
            {"inferfleet.io/service": "llama"},
            {"nodeName": "a-1"},
            {},
            PodWake(frees_gpus=True, status_of=("ml", "llama")),
            id="a single-pod replica's pod gone: GPUs and its service's placement",
        ),
        pytest.param("DELETED", {}, {"nodeName": "a-1"}, {}, PodWake(frees_gpus=True), id="any bound pod"),
        pytest.param("DELETED", {}, {}, {}, PodWake(), id="a pending pod frees nothing"),
        pytest.param(
            "DELETED",
            MEMBER,
            {"nodeName": "a-1"},
            {},
            PodWake(frees_gpus=True, member_gone=(("ml", "llama"), 1)),
            id="a bound member",
        ),
        pytest.param(
            "DELETED",
            {**MEMBER, "inferfleet.io/replica": "x"},
            {},
            {},
            PodWake(),
            id="a forged replica label",
        ),
    ],
)
def test_a_pod_event_wakes_what_it_concerns(
    event: str, labels: dict[str, str], spec: dict[str, Any], status: dict[str, Any], wake: PodWake
) -> None:
    assert compute_pod_wake(event, "ml", labels, spec, status) == wake


def condition(status: str, reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": status, "reason": reason}]}


def test_services_waiting_for_gpus_are_those_not_ready_for_a_capacity_reason() -> None:
    statuses = {
        ("ml", "waits"): condition("False", "InsufficientCapacity"),
        ("ml", "no-product"): condition("False", "NoMatchingNodes"),
        ("ml", "asked"): condition("False", "WaitingForNodes"),  # its nodes come from the autoscaler
        ("ml", "refused"): condition("False", "NodesUnavailable"),
        ("ml", "invalid"): condition("False", "InvalidSpec"),
        ("ml", "ready"): condition("True", "Ready"),
        ("ml", "new"): None,
    }
    waiting = [("ml", "waits"), ("ml", "no-product"), ("ml", "asked"), ("ml", "refused")]
    assert compute_waiting_services(statuses) == waiting
