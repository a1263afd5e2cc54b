"""Which replica groups are lost and restart whole, and which nodes new placements avoid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inferfleet.api import SchedulingSpec
from inferfleet.planning.groups import group_key
from inferfleet.planning.inventory import GpuNode, Taint
from inferfleet.planning.lost import compute_lost_groups
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.placement import BoundPod
from inferfleet.planning.stuck import UNSCHEDULABLE_GRACE, UnschedulableMember

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
GPUS_TAKEN = "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match selector."
TAINTED = "0/3 nodes are available: 1 node(s) had untolerated taint(s)."
GPU_TAINT = Taint("maintenance", "true", "NoSchedule")


def group(replica: int, nodes: tuple[str, ...]) -> ObservedGroup:
    return ObservedGroup(
        namespace="ml", service="llama", replica=replica, uid=f"sts-{replica}", domain="a", nodes=nodes,
        gpus_per_pod=8, pods=len(nodes), ready_pods=len(nodes), generation=1, observed_generation=1,
    )  # fmt: skip


def node(name: str, **kwargs: object) -> GpuNode:
    return GpuNode(name, "NVIDIA-H100-80GB-HBM3", 8, 80.0, {}, **kwargs)  # type: ignore[arg-type]


NODES = [node("a-1"), node("a-2"), node("b-1")]


def lost(
    groups: list[ObservedGroup],
    nodes: list[GpuNode] = NODES,
    members: list[UnschedulableMember] = (),  # type: ignore[assignment]
    bound: list[BoundPod] = (),  # type: ignore[assignment]
    scheduling: SchedulingSpec | None = None,
) -> tuple[list[int], frozenset[str], datetime | None]:
    result = compute_lost_groups("ml", groups, scheduling, nodes, list(members), bound, NOW)
    return [g.replica for g in result.groups], result.refused_nodes, result.recheck_at


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        pytest.param(NODES, [], id="every node healthy: nothing lost"),
        pytest.param([node("a-1"), node("b-1")], [0], id="a node gone"),
        pytest.param([node("a-1"), node("a-2", ready=False), node("b-1")], [0], id="a node NotReady"),
        pytest.param([node("a-1"), node("a-2", cordoned=True), node("b-1")], [0], id="a node cordoned"),
        pytest.param(
            [node("a-1"), node("a-2", taints=(GPU_TAINT,)), node("b-1")], [0], id="untolerated taint"
        ),
    ],
)
def test_a_group_with_a_member_on_a_node_that_no_longer_takes_it_is_lost(
    nodes: list[GpuNode], expected: list[int]
) -> None:
    assert lost([group(0, ("a-1", "a-2")), group(1, ("b-1",))], nodes) == (expected, frozenset(), None)


def test_a_taint_the_service_tolerates_keeps_its_group() -> None:
    tolerating = SchedulingSpec.model_validate(
        {"tolerations": [{"key": "maintenance", "operator": "Exists"}]}
    )
    nodes = [node("a-1"), node("a-2", taints=(GPU_TAINT,))]
    assert lost([group(0, ("a-1", "a-2"))], nodes, scheduling=tolerating) == ([], frozenset(), None)


def test_a_member_whose_gpus_were_taken_restarts_its_group_and_the_nodes_it_did_not_hold_are_refused() -> (
    None
):
    members = [UnschedulableMember(0, "sts-0", GPUS_TAKEN, NOW - timedelta(seconds=2))]
    bound = [BoundPod(node="a-1", gpus=8, group=group_key("ml", "llama", 0))]
    assert lost([group(0, ("a-1", "a-2"))], members=members, bound=bound) == ([0], frozenset({"a-2"}), None)


def test_a_member_refused_for_a_reason_that_may_pass_waits_out_the_grace() -> None:
    since = NOW - timedelta(seconds=5)
    members = [UnschedulableMember(0, "sts-0", TAINTED, since)]
    assert lost([group(0, ("a-1", "a-2"))], members=members) == ([], frozenset(), since + UNSCHEDULABLE_GRACE)


def test_a_refusal_of_an_earlier_statefulset_of_the_same_replica_counts_for_nothing() -> None:
    members = [UnschedulableMember(0, "sts-old", GPUS_TAKEN, NOW)]
    assert lost([group(0, ("a-1", "a-2"))], members=members) == ([], frozenset(), None)


def test_the_log_line_says_which_nodes_were_lost() -> None:
    result = compute_lost_groups("ml", [group(3, ("a-1", "x-9"))], None, NODES, [], [], NOW)
    assert [g.why for g in result.lost] == [
        "replica group 3 lost ['x-9'] (gone, NotReady, cordoned or tainted); restarting it whole"
    ]
