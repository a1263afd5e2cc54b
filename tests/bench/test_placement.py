"""The placement benchmark: its clusters and arrivals, arms, solver, stranded-GPU accounting and report."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from types import SimpleNamespace

import pytest
from bench.placement.arms import (
    INFERFLEET,
    INFERFLEET_BESTFIT,
    INFERFLEET_MOSTALLOCATED,
    LEAST,
    LEAST_ALLOCATED,
    MOST,
    FreeGpus,
    Outcome,
    Strategy,
    fit_score,
    run_heuristics,
    run_inferfleet,
    run_least_allocated,
    scheduler_node,
    top_scored,
)
from bench.placement.cli import main, run_size
from bench.placement.cluster import Arrival, Case, Cluster, Node, Params, make_case
from bench.placement.kwok import (
    REAL,
    REAL_BINPACK,
    SIM_LA,
    SIM_MA,
    compare,
    deviations,
    kwok_cases,
    nodes_schedulable,
    per_gpu_requests,
    pod_manifest,
    probe_scores,
)
from bench.placement.metrics import count, violations
from bench.placement.solver import solve

from inferfleet.localcluster.inventory import load_inventory


def hand_cluster(free: dict[str, tuple[str, int]], gpus: int = 8) -> Cluster:
    """Nodes named by `free` (name -> (rack, free GPUs)), the rest of each node taken by one pod."""
    nodes = tuple(Node(name, rack, gpus) for name, (rack, _) in sorted(free.items()))
    prebound = tuple((name, gpus - f) for name, (_, f) in sorted(free.items()) if f < gpus)
    return Cluster(nodes, prebound)


def test_least_allocated_leaves_a_partial_group_where_inferfleet_places_it_whole() -> None:
    # rack-a: a1 empty, a2 half full; rack-b: both empty. The default scheduler puts the leader on
    # the first of the equally scored empty nodes (a1), then finds no 8 free GPUs left in rack-a.
    cluster = hand_cluster(
        {"a1": ("rack-a", 8), "a2": ("rack-a", 4), "b1": ("rack-b", 8), "b2": ("rack-b", 8)}
    )
    case = Case("hand", cluster, (Arrival("g", pods=2, gpus_per_pod=8),))

    la = run_least_allocated(case)
    inf = run_inferfleet(case, "least-allocated")

    assert la.placements["g"] == ("a1", None)
    assert count(case, la)["partial_groups"] == 1
    assert count(case, la)["gpus_held_by_partial_groups"] == 8
    assert inf.placements["g"] == ("b1", "b2")
    assert count(case, inf)["partial_groups"] == 0
    assert count(case, inf)["groups_placed"] == 1


@pytest.mark.parametrize(
    ("arm", "expected"),
    [
        # least allocated spreads the 2-GPU pod onto the empty node, so the 8-GPU pod finds none
        (INFERFLEET, {"s2": ("n2",), "s8": (None,)}),
        (LEAST_ALLOCATED, {"s2": ("n2",), "s8": (None,)}),
        # most allocated (the binpack profile) and best fit put it on the node with 3 free,
        # leaving the empty node to the 8-GPU pod
        (INFERFLEET_MOSTALLOCATED, {"s2": ("n1",), "s8": ("n2",)}),
        (INFERFLEET_BESTFIT, {"s2": ("n1",), "s8": ("n2",)}),
    ],
)
def test_single_pods_go_least_allocated_most_allocated_or_best_fit(
    arm: str, expected: dict[str, tuple[str | None]]
) -> None:
    cluster = hand_cluster({"n1": ("r", 3), "n2": ("r", 8)})
    case = Case("hand", cluster, (Arrival("s2", 1, 2), Arrival("s8", 1, 8)))
    assert run_heuristics(case)[arm].placements == expected


@pytest.mark.parametrize(
    ("strategy", "allocatable", "free", "gpus", "score"),
    [
        # MostAllocated: GPUs requested with the pod counted * 100 / allocatable, integer division
        (MOST, 8, 8, 1, 12),  # 12.5
        (MOST, 8, 3, 2, 87),  # 87.5
        (MOST, 8, 3, 3, 100),
        (MOST, 4, 2, 1, 75),
        (MOST, 11, 10, 1, 18),  # 18.18
        (MOST, 16, 14, 1, 18),  # 18.75: the same integer score
        # LeastAllocated: what stays free * 100 / allocatable
        (LEAST, 8, 8, 1, 87),
        (LEAST, 8, 3, 2, 12),
        (LEAST, 4, 4, 4, 0),
        (LEAST, 11, 10, 1, 81),  # 81.8
        (LEAST, 16, 14, 1, 81),  # 81.25
    ],
)
def test_node_resources_fit_scores_on_gpus_in_integers(
    strategy: Strategy, allocatable: int, free: int, gpus: int, score: int
) -> None:
    assert fit_score(strategy, allocatable, free, gpus) == score


@pytest.mark.parametrize(
    ("arm", "expected"),
    [
        # LeastAllocated sends every 1-GPU pod to the emptiest node (n2: 87, then 75, then 62)
        (INFERFLEET, {"a": ("n2",), "b": ("n2",), "c": ("n2",)}),
        # MostAllocated fills n1 (87, then 100), then the fuller of the other two (n3: 50 > n2: 12)
        (INFERFLEET_MOSTALLOCATED, {"a": ("n1",), "b": ("n1",), "c": ("n3",)}),
    ],
)
def test_least_allocated_spreads_where_most_allocated_packs(
    arm: str, expected: dict[str, tuple[str | None]]
) -> None:
    cluster = hand_cluster({"n1": ("r", 2), "n2": ("r", 8), "n3": ("r", 5)})
    case = Case("hand", cluster, (Arrival("a", 1, 1), Arrival("b", 1, 1), Arrival("c", 1, 1)))
    out = run_heuristics(case)[arm]
    assert out.placements == expected
    assert violations(case, out) == []


def test_most_allocated_only_scores_nodes_the_pod_fits_on() -> None:
    # n1 would score highest (1 free) but a 2-GPU pod does not fit there; nothing fits a 7-GPU pod
    cluster = hand_cluster({"n1": ("r", 1), "n2": ("r", 6), "n3": ("r", 2)})
    case = Case("hand", cluster, (Arrival("a", 1, 2), Arrival("b", 1, 2), Arrival("c", 1, 7)))
    out = run_inferfleet(case, "most-allocated")
    assert out.placements == {"a": ("n3",), "b": ("n2",), "c": (None,)}
    assert violations(case, out) == []
    assert count(case, out)["free_gpus_end"] == 1 + 4


@pytest.mark.parametrize("strategy", [MOST, LEAST])
def test_integer_score_ties_go_by_name_in_the_simulation_and_every_tied_node_counts_as_top(
    strategy: Strategy,
) -> None:
    # a: 11 GPUs, 1 taken; b: 16 GPUs, 2 taken. For 1 GPU: MostAllocated 2/11 = 18.2 and 3/16 = 18.75
    # both score 18, LeastAllocated 9/11 = 81.8 and 13/16 = 81.25 both 81: a tie, though the fractions
    # differ. The simulation takes the first by name, the real scheduler any of them at random.
    cluster = Cluster((Node("a", "r", 11), Node("b", "r", 16)), (("a", 1), ("b", 2)))
    state = FreeGpus(cluster)
    assert top_scored(state, 1, strategy=strategy) == {"a", "b"}
    assert scheduler_node(state, 1, strategy=strategy) == "a"
    # an exact tie across node sizes: half of a 4-GPU node and half of an 8-GPU node after the pod
    halves = Cluster((Node("x", "r", 8), Node("y", "r", 4)), (("x", 3), ("y", 1)))
    assert top_scored(FreeGpus(halves), 1, strategy=MOST) == {"x", "y"}
    assert scheduler_node(FreeGpus(halves), 1, strategy=MOST) == "x"


def test_stranded_gpus_are_partial_group_gpus_plus_free_gpus_below_the_smallest_refused_request() -> None:
    # Free before: n1 8, n2 8, n3 3, n4 1 (n1, n2 in rack-a; n3, n4 in rack-b).
    cluster = hand_cluster(
        {"n1": ("rack-a", 8), "n2": ("rack-a", 8), "n3": ("rack-b", 3), "n4": ("rack-b", 1)}
    )
    arrivals = (
        Arrival("g", pods=3, gpus_per_pod=8),  # partial: holds n1's 8 GPUs
        Arrival("s4", pods=1, gpus_per_pod=4),  # on n2 -> 4 left
        Arrival("s8", pods=1, gpus_per_pod=8),  # refused
        Arrival("s2", pods=1, gpus_per_pod=2),  # on n3 -> 1 left
        Arrival("s4b", pods=1, gpus_per_pod=4),  # on n2 -> 0 left
        Arrival("s2b", pods=1, gpus_per_pod=2),  # refused: the smallest refused request, 2 GPUs
    )
    outcome = Outcome(
        "hand",
        {
            "g": ("n1", None, None),
            "s4": ("n2",),
            "s8": (None,),
            "s2": ("n3",),
            "s4b": ("n2",),
            "s2b": (None,),
        },
    )
    c = count(Case("hand", cluster, arrivals), outcome)
    # free at the end: n1 0, n2 0, n3 1, n4 1; all below 2, so both count
    assert c["free_gpus_end"] == 2
    assert c["stranded_free_gpus"] == 2
    assert c["gpus_held_by_partial_groups"] == 8
    assert c["stranded_gpus"] == 10
    assert c["smallest_refused_gpus_per_pod"] == 2
    assert (c["replicas_placed"], c["singles_placed"], c["groups_placed"], c["partial_groups"]) == (
        3,
        3,
        0,
        1,
    )
    assert c["gpus_serving"] == 10


def test_nothing_refused_strands_no_free_gpus() -> None:
    cluster = hand_cluster({"n1": ("r", 5)})
    case = Case("hand", cluster, (Arrival("s1", 1, 1),))
    c = count(case, run_least_allocated(case))
    assert (c["free_gpus_end"], c["stranded_gpus"], c["smallest_refused_gpus_per_pod"]) == (4, 0, 0)


def test_the_same_seed_gives_the_same_cluster_and_arrivals_and_another_seed_does_not() -> None:
    assert make_case(128, seed=3) == make_case(128, seed=3)
    assert make_case(128, seed=3).arrivals != make_case(128, seed=4).arrivals
    assert make_case(16, seed=3, index=0) != make_case(16, seed=3, index=1)


def test_arrivals_ask_for_more_than_the_free_gpus_and_mix_every_shape() -> None:
    case = make_case(1000, seed=1)
    free = sum(case.cluster.free().values())
    offered = sum(a.gpus for a in case.arrivals)
    assert Params.demand * free <= offered < Params.demand * free + 32
    assert {a.gpus_per_pod for a in case.arrivals if not a.is_group} == {1, 2, 4, 8}
    assert {a.pods for a in case.arrivals if a.is_group} == {2, 3, 4}
    assert all(a.gpus_per_pod == 8 for a in case.arrivals if a.is_group)
    assert 0.3 < 1 - free / case.cluster.gpus < 0.55
    racks = sorted({n.rack for n in case.cluster.nodes})
    assert all(4 <= sum(1 for n in case.cluster.nodes if n.rack == r) <= 8 for r in racks[:-1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_solver_places_at_least_as_many_replicas_as_any_heuristic_on_16_nodes(seed: int) -> None:
    case = make_case(16, seed)
    heuristics = run_heuristics(case)
    exact = solve(case, time_limit_s=20.0)
    assert exact.status == "OPTIMAL"
    assert violations(case, exact) == []
    best = max(count(case, out)["replicas_placed"] for out in heuristics.values())
    assert count(case, exact)["replicas_placed"] >= best
    assert count(case, exact)["partial_groups"] == 0


@pytest.mark.parametrize("size", [16, 128])
def test_every_arm_respects_capacity_and_keeps_groups_in_one_rack_on_distinct_nodes(size: int) -> None:
    case = make_case(size, seed=5)
    outcomes = run_heuristics(case)
    if size == 16:
        outcomes["solver"] = solve(case, time_limit_s=20.0)
    for out in outcomes.values():
        assert violations(case, out) == []
        assert set(out.placements) == {a.id for a in case.arrivals}
    for arm in (INFERFLEET, INFERFLEET_MOSTALLOCATED, INFERFLEET_BESTFIT, "solver"):
        if arm in outcomes:
            assert count(case, outcomes[arm])["partial_groups"] == 0


def test_violations_catch_overcommit_split_racks_and_shared_nodes() -> None:
    cluster = hand_cluster({"a1": ("rack-a", 8), "a2": ("rack-a", 8), "b1": ("rack-b", 8)})
    arrivals = (Arrival("g", 2, 8), Arrival("h", 2, 4))
    bad = Outcome("bad", {"g": ("a1", "b1"), "h": ("a2", "a2")})
    problems = violations(Case("hand", cluster, arrivals), bad)
    assert any("spans racks" in p for p in problems)
    assert any("two pods on one node" in p for p in problems)
    over = Outcome("over", {"g": ("a1", "a2"), "h": ("a1", None)})
    assert violations(Case("hand", cluster, arrivals), over) == ["over: a1 over-committed by 4 GPUs"]


def test_run_size_reports_every_arm_and_the_targets_with_the_solver_on_small_clusters() -> None:
    result = run_size(16, seed=1, params=Params(), instances=2, with_solver=True)
    arms = result["arms"]
    assert set(arms) == {INFERFLEET, INFERFLEET_MOSTALLOCATED, INFERFLEET_BESTFIT, LEAST_ALLOCATED, "solver"}
    assert arms["solver"]["placed_vs_solver"] == 1.0
    assert arms[LEAST_ALLOCATED]["stranded_vs_least_allocated"] == 1.0
    assert arms["solver"]["solver_instances"] == 2
    targets = result["targets"][INFERFLEET_BESTFIT]
    assert targets["partial_groups_eq_0"]["holds"] is True
    assert targets["placed_ge_0.95x_solver"]["applies"] is True
    assert targets["decision_lt_100ms_per_replica_at_1000_nodes"]["applies"] is False
    assert result["targets"][LEAST_ALLOCATED]["stranded_le_0.6x_least_allocated"]["applies"] is False
    assert result["targets"][INFERFLEET_MOSTALLOCATED]["placed_ge_0.95x_solver"]["applies"] is True
    assert len(result["per_instance"]) == 2


def test_main_prints_a_table_and_json() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--sizes", "16,128", "--small-instances", "2"]) == 0
    text = out.getvalue()
    assert "== 16 nodes x 2 instances" in text
    assert "== 128 nodes" in text
    assert "PASS" in text
    assert f"{INFERFLEET_MOSTALLOCATED} = THE PRODUCT WITH THE BINPACK PROFILE" in text
    assert f"{INFERFLEET} = the product without the profile" in text

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--sizes", "16", "--small-instances", "1", "--json"]) == 0
    report = json.loads(out.getvalue())
    assert set(report["sizes"]["16"]["arms"]) == {
        INFERFLEET,
        INFERFLEET_MOSTALLOCATED,
        INFERFLEET_BESTFIT,
        LEAST_ALLOCATED,
        "solver",
    }
    assert isinstance(report["misses"], list)
    verdicts = report["verdicts"]
    assert list(verdicts) == [INFERFLEET_MOSTALLOCATED, INFERFLEET, INFERFLEET_BESTFIT]
    assert "judged" in verdicts[INFERFLEET_MOSTALLOCATED]["role"]
    assert verdicts[INFERFLEET]["placed_ge_0.95x_solver"]["by_size"].keys() == {"16"}
    assert verdicts[INFERFLEET]["decision_lt_100ms_per_replica_at_1000_nodes"]["holds"] is None


def test_kwok_instances_use_the_h100_nodes_and_groups_that_fit_a_rack() -> None:
    inventory = load_inventory()
    cases = kwok_cases(7, Params(), inventory, instances=2)
    nodes = cases[0].cluster.nodes
    assert len(nodes) == 10
    assert all(n.name.startswith("h100-") and n.gpus == 8 for n in nodes)
    assert all(a.pods == 2 for c in cases for a in c.arrivals if a.is_group)
    assert cases[0].arrivals != cases[1].arrivals


def test_kwok_pods_request_cpu_and_memory_in_proportion_and_group_pods_share_a_rack() -> None:
    inventory = load_inventory()
    per_gpu = per_gpu_requests(inventory)
    assert (per_gpu.cpu_m, per_gpu.memory) == (24_000, 256 * 2**30)
    pod = pod_manifest("g-0", 8, per_gpu, inventory, group="g")
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "192000m",
        "memory": str(2 * 2**40),
        "nvidia.com/gpu": "8",
    }
    [term] = pod["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term == {
        "labelSelector": {"matchLabels": {"bench.inferfleet.io/replica": "g"}},
        "topologyKey": "inferfleet.io/rack",
    }
    assert "nodeName" not in pod["spec"]
    pre = pod_manifest("pre-0", 2, per_gpu, inventory, node="h100-a-1")
    assert pre["spec"]["nodeName"] == "h100-a-1"
    assert "affinity" not in pre["spec"]


def test_a_real_choice_outside_least_allocateds_top_scores_is_reported_as_a_deviation() -> None:
    cluster = hand_cluster({"n1": ("r", 8), "n2": ("r", 8), "n3": ("r", 2)})
    case = Case("hand", cluster, (Arrival("a", 1, 2), Arrival("b", 1, 2)))

    def devs(case: Case, placements: dict[str, tuple[str | None, ...]]) -> list[str]:
        pods, groups = deviations(case, Outcome("real", placements), LEAST)
        assert groups == []
        return pods

    # a: n1 and n2 tie; b: then the untouched one scores highest
    assert devs(case, {"a": ("n2",), "b": ("n1",)}) == []
    assert devs(case, {"a": ("n2",), "b": ("n2",)}) == ["hand b-0 (2 GPUs): n2, top ['n1']"]
    assert devs(case, {"a": (None,), "b": ("n1",)}) == ["hand a-0 (2 GPUs): None, top ['n1', 'n2']"]
    too_big = Case("hand", cluster, (Arrival("c", 1, 8), Arrival("d", 1, 8), Arrival("e", 1, 8)))
    assert devs(too_big, {"c": ("n1",), "d": ("n2",), "e": (None,)}) == []


def test_the_binpack_replay_is_checked_against_most_allocated_and_the_planned_groups() -> None:
    # rack a: a1 (2 free), a2 (8), rack b: b1, b2 (8 each). A 1-GPU pod scores highest on a1 by
    # MostAllocated; the 2 x 8 group fits only rack b (a1 has too few GPUs).
    cluster = hand_cluster({"a1": ("a", 2), "a2": ("a", 8), "b1": ("b", 8), "b2": ("b", 8)})
    case = Case("hand", cluster, (Arrival("s", 1, 1), Arrival("g", 2, 8)))
    assert deviations(
        case, Outcome("real", {"s": ("a1",), "g": ("b2", "b1")}), MOST, planned_groups=True
    ) == (
        [],
        [],
    )
    pods, groups = deviations(
        case, Outcome("real", {"s": ("a2",), "g": (None, None)}), MOST, planned_groups=True
    )
    assert pods == ["hand s-0 (1 GPUs): a2, top ['a1']"]
    assert groups == ["hand g (2x8 GPUs): (None, None), planned ('b1', 'b2')"]


def test_compare_checks_each_replay_against_its_own_simulated_arm() -> None:
    cluster = hand_cluster({"a1": ("a", 2), "a2": ("a", 8), "b1": ("b", 8), "b2": ("b", 8)})
    case = Case("hand", cluster, (Arrival("s", 1, 1), Arrival("g", 2, 8)))
    # the default profile as least-allocated simulates it: s to a2 (emptiest, first by name), the
    # group's pods to b1 then b2; the binpack replay as inferfleet+mostallocated: s to a1
    default = run_heuristics(case)[LEAST_ALLOCATED]
    assert default.placements == {"s": ("a2",), "g": ("b1", "b2")}
    binpack = Outcome(REAL_BINPACK, {"s": ("a1",), "g": ("b2", "b1")})
    report = compare([case], [Outcome(REAL, dict(default.placements))], [binpack])
    la, ma = report["checks"][REAL], report["checks"][REAL_BINPACK]
    assert (la["simulated"], ma["simulated"]) == (SIM_LA, SIM_MA)
    assert la["counts_identical"]
    assert ma["counts_identical"]
    assert la["same_node"] == la["pods"] == 3
    assert la["scored_pods_among_top_scored"] == 3
    assert la["groups_on_planned_nodes"] is None
    # the group's pods swapped nodes: still the planned nodes, compared as a set
    assert ma["same_node"] == ma["pods"] == 3
    assert (ma["scored_pods"], ma["scored_pods_among_top_scored"]) == (1, 1)
    assert (ma["groups"], ma["groups_on_planned_nodes"]) == (1, 1)
    assert report["arms"][REAL_BINPACK]["replicas_placed"] == 2


def test_the_probe_separates_gpu_only_scoring_from_gpu_cpu_and_memory() -> None:
    nodes = tuple(Node(f"h{i}", "r", 8) for i in range(4))
    # h0: no GPU but the cpu/memory of 6 GPUs; h1: 4 GPUs and no cpu/memory
    scores = probe_scores(nodes, {"h0": (0, 6), "h1": (4, 0)}, 1)
    assert scores["gpu_only"] == {"h0": 12, "h1": 62, "h2": 12, "h3": 12}
    assert scores["gpu_cpu_memory"] == {
        "h0": (12 + 87 + 87) // 3,
        "h1": (62 + 12 + 12) // 3,
        "h2": 12,
        "h3": 12,
    }
    assert (scores["top_gpu_only"], scores["top_gpu_cpu_memory"]) == (["h1"], ["h0"])


def test_binpack_pods_name_the_profile_and_pinned_group_pods_carry_the_operators_affinity() -> None:
    inventory = load_inventory()
    per_gpu = per_gpu_requests(inventory)
    single = pod_manifest("s-0", 2, per_gpu, inventory, scheduler="inferfleet-binpack")
    assert single["spec"]["schedulerName"] == "inferfleet-binpack"
    assert "affinity" not in single["spec"]
    pinned = pod_manifest(
        "g-0", 8, per_gpu, inventory, group="g", pinned=("rack-a1", ("h100-a-1", "h100-a-2"))
    )
    assert "schedulerName" not in pinned["spec"]
    affinity = pinned["spec"]["affinity"]
    [term] = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["h100-a-1", "h100-a-2"]},
        {"key": "inferfleet.io/rack", "operator": "In", "values": ["rack-a1"]},
    ]
    [anti] = affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert "podAffinity" not in affinity
    probe = pod_manifest("pre-0", 0, per_gpu, inventory, node="h100-a-1", cpu_memory_gpus=6)
    requests = probe["spec"]["containers"][0]["resources"]["requests"]
    assert requests == {"cpu": "144000m", "memory": str(6 * 256 * 2**30), "nvidia.com/gpu": "0"}


def _node(taints: list[tuple[str, str]], ready: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        spec=SimpleNamespace(
            taints=[SimpleNamespace(key=k, effect=e) for k, e in taints], unschedulable=None
        ),
        status=SimpleNamespace(
            conditions=[SimpleNamespace(type="Ready", status="True" if ready else "False")]
        ),
    )


@pytest.mark.parametrize(
    ("node", "schedulable"),
    [
        (_node([("nvidia.com/gpu", "NoSchedule")]), True),
        (_node([("nvidia.com/gpu", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoSchedule")]), False),
        (_node([("nvidia.com/gpu", "NoSchedule")], ready=False), False),
    ],
)
def test_the_replay_waits_for_nodes_without_the_not_ready_taint(
    node: SimpleNamespace, schedulable: bool
) -> None:
    inventory = load_inventory()
    nodes = (Node("h100-a-1", "rack-a1", 8),)
    core = SimpleNamespace(read_node=lambda name: node)
    assert nodes_schedulable(core, nodes, inventory) is schedulable
