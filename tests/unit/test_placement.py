"""All-or-nothing, topology-aware placement of multi-node replica groups."""

from __future__ import annotations

import pytest

from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.placement import (
    BoundPod,
    GroupPlacement,
    NodeFree,
    Reservation,
    Shortfall,
    compute_free_gpus,
    plan_group_placement,
    plan_groups,
)

H100 = "NVIDIA-H100-80GB-HBM3"
L4 = "NVIDIA-L4"
ZONE = "topology.kubernetes.io/zone"


def node(
    name: str, zone: str | None = "zone-a", *, gpus: int = 8, product: str = H100, schedulable: bool = True
) -> GpuNode:
    labels = {"nvidia.com/gpu.product": product} | ({ZONE: zone} if zone else {})
    return GpuNode(
        name=name, product=product, gpus=gpus, gpu_memory_gib=80.0, labels=labels, cordoned=not schedulable
    )


def free_nodes(**zones: list[int]) -> list[NodeFree]:
    """NodeFree rows from free-GPU counts per zone: free_nodes(a=[8, 8]) -> a-1 and a-2 in zone-a."""
    return [
        NodeFree(name=f"{z}-{i}", domain=f"zone-{z}", free_gpus=f)
        for z, frees in zones.items()
        for i, f in enumerate(frees, start=1)
    ]


def place(
    free: list[NodeFree], pods: int, gpus: int, product: str | None = H100
) -> GroupPlacement | Shortfall:
    return plan_group_placement(free, pods, gpus, product=product, topology_key=ZONE)


@pytest.mark.parametrize(
    ("free", "pods", "gpus", "expected"),
    [
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8]), 2, 8, GroupPlacement("zone-a", ("a-1", "a-2")), id="two-zones"
        ),
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8, 8]),
            2,
            8,
            GroupPlacement("zone-a", ("a-1", "a-2")),
            id="least-total-free",
        ),
        pytest.param(
            free_nodes(a=[8, 8, 8], b=[8, 8]),
            2,
            8,
            GroupPlacement("zone-b", ("b-1", "b-2")),
            id="least-total-free-b",
        ),
        pytest.param(free_nodes(a=[8, 5, 4]), 1, 4, GroupPlacement("zone-a", ("a-3",)), id="best-fit-node"),
        pytest.param(
            free_nodes(a=[8, 8], b=[4, 4]),
            2,
            4,
            GroupPlacement("zone-b", ("b-1", "b-2")),
            id="least-left-over",
        ),
        pytest.param(
            free_nodes(a=[8, 3, 6, 4]),
            2,
            4,
            GroupPlacement("zone-a", ("a-3", "a-4")),
            id="ranks-sorted-by-name",
        ),
        pytest.param(free_nodes(a=[8]), 1, 8, GroupPlacement("zone-a", ("a-1",)), id="single-pod"),
    ],
)
def test_plan_group_placement(free: list[NodeFree], pods: int, gpus: int, expected: GroupPlacement) -> None:
    assert place(free, pods, gpus) == expected


@pytest.mark.parametrize(
    ("free", "pods", "gpus", "product", "fragments"),
    [
        pytest.param(
            free_nodes(a=[8], b=[8]),
            2,
            8,
            H100,
            [
                "needs 2 nodes with 8 free NVIDIA-H100-80GB-HBM3 GPUs in one topology.kubernetes.io/zone",
                "best is zone-a with 1 such node",
            ],
            id="half-group-in-each-zone",
        ),
        pytest.param(
            free_nodes(a=[8, 4, 2, 0], b=[4]),
            2,
            8,
            H100,
            ["best is zone-a with 1 such node (3 nodes there have fewer free GPUs)"],
            id="fragmented-zone",
        ),
        pytest.param(
            free_nodes(a=[4], b=[6]),
            1,
            8,
            None,
            ["8 free GPUs (any GPU)", "no node has that many (2 nodes"],
            id="no-candidates",
        ),
        pytest.param(
            [],
            1,
            8,
            H100,
            ["no schedulable node", "carries the topology.kubernetes.io/zone label"],
            id="no-nodes",
        ),
    ],
)
def test_shortfall_places_nothing(
    free: list[NodeFree], pods: int, gpus: int, product: str | None, fragments: list[str]
) -> None:
    plan = place(free, pods, gpus, product)
    assert isinstance(plan, Shortfall)
    for fragment in fragments:
        assert fragment in plan.message


@pytest.mark.parametrize(
    ("nodes", "bound", "reservations", "expected"),
    [
        pytest.param(
            [node("a-1"), node("a-2", gpus=4), node("b-1", "zone-b")],
            [],
            [],
            [("a-1", "zone-a", 8), ("a-2", "zone-a", 4), ("b-1", "zone-b", 8)],
            id="sorted-by-domain-then-name",
        ),
        pytest.param(
            [node("a-1"), node("l4", product=L4), node("nozone", None), node("cordoned", schedulable=False)],
            [],
            [],
            [("a-1", "zone-a", 8)],
            id="other-product-unlabelled-unschedulable-ignored",
        ),
        pytest.param(
            [node("a-1"), node("a-2")],
            [BoundPod("a-1", 3), BoundPod("a-1", 2, "ns/svc/0"), BoundPod("elsewhere", 8)],
            [],
            [("a-1", "zone-a", 3), ("a-2", "zone-a", 8)],
            id="bound-pods",
        ),
        pytest.param(
            [node("a-1"), node("a-2")],
            [BoundPod("a-1", 8), BoundPod("a-1", 8)],
            [],
            [("a-1", "zone-a", 0), ("a-2", "zone-a", 8)],
            id="clamped-at-zero",
        ),
        pytest.param(
            [node("a-1"), node("a-2")],
            [],
            [Reservation("ns/svc/0", ("a-1", "a-2"), 4)],
            [("a-1", "zone-a", 4), ("a-2", "zone-a", 4)],
            id="reservation-unbound",
        ),
        pytest.param(
            [node("a-1"), node("a-2")],
            [BoundPod("a-1", 4, "ns/svc/0")],
            [Reservation("ns/svc/0", ("a-1", "a-2"), 4)],
            [("a-1", "zone-a", 4), ("a-2", "zone-a", 4)],
            id="reservation-half-bound-no-double-count",
        ),
        pytest.param(
            [node("a-1"), node("a-2")],
            [BoundPod("a-1", 4, "ns/other/0")],
            [Reservation("ns/svc/0", ("a-1",), 4)],
            [("a-1", "zone-a", 0), ("a-2", "zone-a", 8)],
            id="other-groups-pod-does-not-release-reservation",
        ),
    ],
)
def test_compute_free_gpus(
    nodes: list[GpuNode],
    bound: list[BoundPod],
    reservations: list[Reservation],
    expected: list[tuple[str, str, int]],
) -> None:
    free = compute_free_gpus(nodes, H100, ZONE, bound, reservations)
    assert [(f.name, f.domain, f.free_gpus) for f in free] == expected


def test_compute_free_gpus_any_product() -> None:
    free = compute_free_gpus([node("a-1"), node("l4", product=L4, gpus=4)], None, ZONE, [], [])
    assert [(f.name, f.free_gpus) for f in free] == [("a-1", 8), ("l4", 4)]


def _used_gpus(plans: dict[int, GroupPlacement | Shortfall], gpus: int) -> dict[str, int]:
    used: dict[str, int] = {}
    for plan in plans.values():
        if isinstance(plan, GroupPlacement):
            for name in plan.nodes:
                used[name] = used.get(name, 0) + gpus
    return used


def test_plan_groups_never_double_books() -> None:
    plans = plan_groups(free_nodes(a=[8, 8], b=[8, 8]), [0, 1, 2], 2, 8, product=H100, topology_key=ZONE)
    assert plans[0] == GroupPlacement("zone-a", ("a-1", "a-2"))
    assert plans[1] == GroupPlacement("zone-b", ("b-1", "b-2"))
    assert isinstance(plans[2], Shortfall)
    assert "best is" not in plans[2].message  # nothing left with 8 free anywhere
    assert _used_gpus(plans, 8) == {"a-1": 8, "a-2": 8, "b-1": 8, "b-2": 8}


def test_plan_groups_half_node_pods_share_nodes() -> None:
    plans = plan_groups(free_nodes(a=[8, 8], b=[8, 8]), [0, 1], 2, 4, product=H100, topology_key=ZONE)
    assert plans == {0: GroupPlacement("zone-a", ("a-1", "a-2")), 1: GroupPlacement("zone-a", ("a-1", "a-2"))}
    assert _used_gpus(plans, 4) == {"a-1": 8, "a-2": 8}


def test_plan_groups_every_replica_after_a_failure_gets_a_shortfall() -> None:
    plans = plan_groups(free_nodes(a=[8, 8]), [3, 4, 5], 2, 8, product=H100, topology_key=ZONE)
    assert isinstance(plans[3], GroupPlacement)
    assert isinstance(plans[4], Shortfall)
    assert isinstance(plans[5], Shortfall)


def test_invalid_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="pods >= 1"):
        place(free_nodes(a=[8]), 0, 8)


@pytest.mark.parametrize(
    ("free", "warm", "expected"),
    [
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8]), {"b-1", "b-2"}, ("zone-b", ("b-1", "b-2")), id="warm-domain"
        ),
        pytest.param(
            free_nodes(a=[8, 8, 8]), {"a-3"}, ("zone-a", ("a-1", "a-3")), id="warm-node-among-equal-ones"
        ),
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8]),
            {"a-1", "b-1", "b-2"},
            ("zone-b", ("b-1", "b-2")),
            id="warmer-domain-wins",
        ),
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8, 8]),
            {"b-1", "b-2"},
            ("zone-a", ("a-1", "a-2")),
            id="never-more-free-gpus-left-in-the-domain",
        ),
        pytest.param(
            free_nodes(a=[8, 8, 12]),
            {"a-3"},
            ("zone-a", ("a-1", "a-2")),
            id="never-a-stranded-gpu-for-a-warm-node",
        ),
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8, 8]), {"b-1"}, ("zone-a", ("a-1", "a-2")), id="cold-domain-fitter"
        ),
        pytest.param(
            free_nodes(a=[8, 8], b=[8, 8]), set(), ("zone-a", ("a-1", "a-2")), id="no-warm-as-before"
        ),
    ],
)
def test_warm_nodes_break_ties_only(
    free: list[NodeFree], warm: set[str], expected: tuple[str, tuple[str, ...]]
) -> None:
    plan = plan_group_placement(free, 2, 8, product=H100, topology_key=ZONE, warm=frozenset(warm))
    assert plan == GroupPlacement(*expected)


def test_warm_groups_fill_warm_nodes_first_then_cold_ones() -> None:
    free = free_nodes(a=[8, 8], b=[8, 8])
    plans = plan_groups(free, [0, 1], 2, 8, product=H100, topology_key=ZONE, warm=frozenset({"b-1", "b-2"}))
    assert plans == {0: GroupPlacement("zone-b", ("b-1", "b-2")), 1: GroupPlacement("zone-a", ("a-1", "a-2"))}
