"""bench/nodescale's pure pieces: the report's arithmetic, the verdict, the placeholder pods, and
the pending-pod scale-up simulation the baseline's node autoscaler runs."""

from __future__ import annotations

from typing import Any

import pytest
from bench.nodescale.arms import SERVICE, build_rank_pods, service_manifest
from bench.nodescale.karpenter import build_instance_types, node_pools
from bench.nodescale.report import ATOMIC, PLACEHOLDER, Observation, summarise, table, verdict
from bench.nodescale.scenarios import SCENARIOS, pick_scenarios
from kubernetes import client

from inferfleet.api import InferenceServiceSpec, ShardPlan
from inferfleet.localcluster.inventory import build_node, load_inventory
from inferfleet.localcluster.node_autoscaler_standin import ScaleUpSimulation
from inferfleet.planning.children import Owner
from inferfleet.planning.provisioning import build_pod_template

SHARDS = ShardPlan(tensor_parallel=8, pipeline_parallel=2, gpus_per_pod=8, pods_per_replica=2)


def room_for_three_placeholder() -> Observation:
    # 3 nodes added for 4 pending pods: group 0 whole on x1-2/x1-3, group 1 half on x1-1.
    return Observation(
        groups=2,
        pods_per_group=2,
        ready_after={0: 0.9},
        bound={0: ("x1-2", "x1-3"), 1: ("x1-1",)},
        added=("x1-1", "x1-2", "x1-3"),
    )


def test_a_node_holding_only_part_of_a_group_is_unused_and_the_group_half_placed() -> None:
    s = summarise(room_for_three_placeholder())
    assert (s["nodes_added"], s["unused_nodes"], s["unused"]) == (3, 1, ["x1-1"])
    assert (s["half_placed_groups"], s["whole_groups"]) == (1, 1)
    # One of two groups never Ready: the median and the max are "never", not the Ready one's time.
    assert (s["ready"], s["not_ready"], s["p50_s"], s["max_s"]) == (1, 1, None, None)
    assert s["ready_after_s"] == {"0": 0.9}


def test_p50_and_max_over_ready_groups_and_removed_nodes_are_not_unused() -> None:
    obs = Observation(
        groups=3,
        pods_per_group=2,
        ready_after={0: 3.0, 1: 5.0, 2: 10.0},
        bound={0: ("a", "b"), 1: ("c", "d"), 2: ("e", "f")},
        added=("a", "b", "c", "d", "e", "f", "g"),
        removed=("g",),
    )
    s = summarise(obs)
    assert (s["p50_s"], s["max_s"]) == (5.0, 10.0)
    assert (s["nodes_added"], s["nodes_removed"], s["unused_nodes"]) == (7, 1, 0)
    two = summarise(Observation(2, 2, {0: 2.0, 1: 4.0}, {0: ("a", "b"), 1: ("c", "d")}, ("a", "b", "c", "d")))
    assert two["p50_s"] == 3.0


def test_the_verdict_is_met_only_when_atomic_leaves_nothing_unused_or_half_placed() -> None:
    clean = summarise(Observation(2, 2, {0: 2.9}, {0: ("a", "b")}, ("a", "b")))
    stranded = summarise(room_for_three_placeholder())
    assert verdict({ATOMIC: clean, PLACEHOLDER: stranded})["met"] is True
    missed = verdict({ATOMIC: stranded, PLACEHOLDER: stranded})
    assert missed["met"] is False
    assert "atomic: 1 unused node(s), 1 half-placed" in missed["detail"]
    text = table(
        {
            "room-for-3": {
                "what": "w",
                "arms": {ATOMIC: clean, PLACEHOLDER: stranded},
                "verdict": verdict({ATOMIC: clean, PLACEHOLDER: stranded}),
            }
        }
    )
    assert "unused nodes: none for atomic: met" in text
    assert "2.9, never" in text  # per group: the Ready one's time, then never


def test_scenarios_are_picked_by_name() -> None:
    assert pick_scenarios("all") == SCENARIOS
    assert [s.name for s in pick_scenarios("small-rack,plenty")] == ["small-rack", "plenty"]
    with pytest.raises(ValueError, match="unknown"):
        pick_scenarios("nope")


def placeholder_pods(replica: int) -> list[dict[str, Any]]:
    spec = InferenceServiceSpec.model_validate(service_manifest(2)["spec"])
    template = build_pod_template(Owner(SERVICE, "ns", ""), spec, SHARDS, replica)
    return build_rank_pods(template, "ns", replica, SHARDS.pods_per_replica)


def test_placeholder_pods_are_the_groups_pods_one_per_rank_tied_to_one_rack() -> None:
    pods = placeholder_pods(1)
    assert [p["metadata"]["name"] for p in pods] == [f"{SERVICE}-g1-0", f"{SERVICE}-g1-1"]
    for pod in pods:
        spec = pod["spec"]
        assert [c["resources"]["limits"]["nvidia.com/gpu"] for c in spec["containers"]] == ["8"]
        assert spec["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert "ownerReferences" not in pod["metadata"]
        [term] = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "inferfleet.io/rack"
        # The pod matches its own selector: the first rank may go anywhere, the next follow it.
        wanted = term["labelSelector"]["matchLabels"]
        assert wanted.items() <= pod["metadata"]["labels"].items()
    other = placeholder_pods(0)[0]["spec"]["affinity"]["podAffinity"]
    assert other["requiredDuringSchedulingIgnoredDuringExecution"][0] != term


def as_pod(body: dict[str, Any]) -> client.V1Pod:
    return client.ApiClient()._ApiClient__deserialize(body, "V1Pod")


def template(rack: str) -> dict[str, Any]:
    inventory = load_inventory()
    return build_node("t", inventory.pools["h100"], "zone-x", rack, inventory)


def test_the_simulation_keeps_a_groups_later_ranks_in_the_rack_of_its_first() -> None:
    g0 = [as_pod(p) for p in placeholder_pods(0)]
    sim = ScaleUpSimulation(placed=[], free={}, node_labels={})
    assert sim.place_on_new(g0[0], template("rack-x1"))  # no mate placed: any rack
    assert not sim.copy().place_on_new(g0[1], template("rack-x2"))  # its mate is in rack-x1
    assert sim.place_on_new(g0[1], template("rack-x1"))
    # Another group is not held by group 0's rack.
    assert sim.place_on_new(as_pod(placeholder_pods(1)[0]), template("rack-x2"))


def test_the_simulation_counts_free_gpus_and_the_product_on_existing_nodes() -> None:
    pod = as_pod(placeholder_pods(0)[0])
    node = client.V1Node(
        metadata=client.V1ObjectMeta(name="n", labels=template("rack-x1")["metadata"]["labels"]),
        status=client.V1NodeStatus(allocatable={"nvidia.com/gpu": "8"}),
    )
    filler = client.V1Pod(
        metadata=client.V1ObjectMeta(name="f", namespace="other"),
        spec=client.V1PodSpec(
            node_name="n",
            containers=[
                client.V1Container(
                    name="c", resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"})
                )
            ],
        ),
    )
    assert not ScaleUpSimulation.of([filler], {"n": node}).place_on_any(pod, [node])  # 7 free, 8 needed
    sim = ScaleUpSimulation.of([], {"n": node})
    assert sim.place_on_any(pod, [node])
    assert not sim.place_on_any(as_pod(placeholder_pods(0)[1]), [node])  # the node is now full


def test_karpenter_node_pools_follow_the_scenarios_node_groups_in_priority_order() -> None:
    inventory = load_inventory()
    [x1, x2] = node_pools(next(s for s in SCENARIOS if s.name == "small-rack"), "karpenter", inventory)
    assert [p["metadata"]["name"] for p in (x1, x2)] == [
        "small-rack-karpenter-rack-x1",
        "small-rack-karpenter-rack-x2",
    ]
    assert x1["spec"]["weight"] > x2["spec"]["weight"]  # the first node group is preferred
    assert (x1["spec"]["limits"], x2["spec"]["limits"]) == ({"nvidia.com/gpu": "8"}, {"nvidia.com/gpu": "32"})
    labels = x1["spec"]["template"]["metadata"]["labels"]
    assert (labels["inferfleet.io/rack"], labels["nvidia.com/gpu.product"]) == (
        "rack-x1",
        "NVIDIA-H100-80GB-HBM3",
    )
    [offering] = build_instance_types(inventory, "zone-x")[0]["offerings"]
    assert {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-x"]} in offering[
        "Requirements"
    ]


def test_the_time_ratio_is_atomic_over_baseline_and_absent_when_either_never_gets_ready() -> None:
    fast = summarise(
        Observation(2, 2, {0: 30.0, 1: 32.0}, {0: ("a", "b"), 1: ("c", "d")}, ("a", "b", "c", "d"))
    )
    slow = summarise(
        Observation(2, 2, {0: 40.0, 1: 42.0}, {0: ("a", "b"), 1: ("c", "d")}, ("a", "b", "c", "d"))
    )
    assert verdict({ATOMIC: fast, PLACEHOLDER: slow})["p50_ratio"] == {PLACEHOLDER: 0.76}  # 31 / 41
    assert verdict({ATOMIC: fast, PLACEHOLDER: summarise(room_for_three_placeholder())})["p50_ratio"] == {
        PLACEHOLDER: None
    }
