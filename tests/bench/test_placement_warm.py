"""bench/placement's warm-placement rows: the hit rate and the preference the operator ships."""

from __future__ import annotations

from bench.placement.arms import INFERFLEET, INFERFLEET_MOSTALLOCATED, LEAST_ALLOCATED, Outcome
from bench.placement.cli import run_size
from bench.placement.cluster import Arrival, Case, Cluster, Node, Params
from bench.placement.warm import WARM, run_warm_row, warm_hits

NODES = (Node("a1", "rack-a", 8), Node("a2", "rack-a", 8), Node("b1", "rack-b", 8), Node("b2", "rack-b", 8))


def case(*arrivals: Arrival, prebound: tuple[tuple[str, int], ...] = ()) -> Case:
    return Case("hand", Cluster(NODES, prebound), arrivals)


def test_a_hit_needs_every_pod_on_a_node_warm_when_the_replica_arrived() -> None:
    c = case(Arrival("r0", 1, 1), Arrival("r1", 1, 1), Arrival("r2", 2, 8))
    models = {"r0": "m", "r1": "m", "r2": "m"}
    out = Outcome("x", {"r0": ("a1",), "r1": ("a1",), "r2": ("a1", "b1")})
    # r0 lands cold and warms a1; r1 lands warm; r2 has one pod on cold b1.
    assert warm_hits(c, out, models, {"m": set()}) == 1
    assert warm_hits(c, out, models, {"m": {"a1", "b1"}}) == 3


def test_equal_nodes_the_warm_one_wins_under_both_profiles_and_for_groups() -> None:
    for row in (INFERFLEET_MOSTALLOCATED, INFERFLEET):
        single = run_warm_row(case(Arrival("s", 1, 2)), row, {"s": "m"}, {"m": {"b2"}})
        assert single.placements["s"] == ("b2",)
        group = run_warm_row(case(Arrival("g", 2, 8)), row, {"g": "m"}, {"m": {"b1", "b2"}})
        assert group.placements["g"] == ("b1", "b2")


def test_binpack_never_trades_a_fuller_node_for_a_warm_one() -> None:
    # a1 has 2 free GPUs, b1 is empty and warm: MostAllocated packs onto a1 all the same.
    c = case(Arrival("single", 1, 2), prebound=(("a1", 6), ("a2", 8), ("b2", 8)))
    out = run_warm_row(c, INFERFLEET_MOSTALLOCATED, {"single": "m"}, {"m": {"b1"}})
    assert out.placements["single"] == ("a1",)
    # The default profile's affinity outweighs LeastAllocated: the warm node wins there.
    out = run_warm_row(c, INFERFLEET, {"single": "m"}, {"m": {"b1"}})
    assert out.placements["single"] == ("b1",)


def test_run_size_reports_the_hit_rate_next_to_placed_and_stranded() -> None:
    warm = run_size(16, seed=1, params=Params(), instances=2)["warm"]
    rows = (INFERFLEET_MOSTALLOCATED, INFERFLEET, LEAST_ALLOCATED)
    assert set(warm) == {*rows, INFERFLEET_MOSTALLOCATED + WARM, INFERFLEET + WARM}
    for row in warm.values():
        assert row["warm_hit_rate"] == round(row["warm_hits"] / row["replicas_placed"], 3)
    binpack, preferring = warm[INFERFLEET_MOSTALLOCATED], warm[INFERFLEET_MOSTALLOCATED + WARM]
    assert preferring["warm_hits"] >= binpack["warm_hits"]
