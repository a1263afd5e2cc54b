"""The routing arm's offline model (bench/gateway/routing_model.py): requests in flight for the sim
engine's time, the gateway's own prefix affinity on it, and the model of vllm-router's rules."""

from __future__ import annotations

from collections.abc import Mapping

from bench.gateway.prefix_workload import WorkItem
from bench.gateway.routing import Route, build_prefix_affinity_route, least_loaded
from bench.gateway.routing_model import build_cache_aware_route, compute_routing_model

from inferfleet.planning.prefix_routing import LoadBound

W = 16
ENGINES = ["engine-0", "engine-1"]
# One block each; at 10 words/s of prefill and 10 tokens/s, an uncached request holds its engine
# 1.7 s. The second arrives while the first is in flight, the third after the first ended.
SAME_PROMPT_THRICE = [WorkItem(0.0, (0,), W, 1), WorkItem(1.0, (0,), W, 1), WorkItem(2.0, (0,), W, 1)]


def model(route: Route) -> tuple[float, int, float]:
    result = compute_routing_model(SAME_PROMPT_THRICE, route, ENGINES, 100, W, 10.0, 10.0)
    return result.hit_rate, result.uncached_p50_words, result.busiest_engine_over_mean


def test_least_load_sees_what_is_in_flight_for_the_engines_time() -> None:
    seen: list[dict[str, int]] = []

    def route(in_flight: Mapping[str, int], blocks: tuple[int, ...]) -> str:
        seen.append(dict(in_flight))
        return least_loaded(in_flight)

    # 1st on engine-0; 2nd on engine-1 (engine-0 busy until 1.7 s), a miss there; 3rd on engine-0
    # (idle again, engine-1 busy until 2.7 s), a hit of its one block.
    assert model(route) == (round(1 / 3, 4), W, round(4 / 3, 3))
    assert seen == [
        {"engine-0": 0, "engine-1": 0},
        {"engine-0": 1, "engine-1": 0},
        {"engine-0": 0, "engine-1": 1},
    ]


def test_the_gateways_prefix_affinity_keeps_a_repeated_prompt_where_it_is_cached() -> None:
    assert model(build_prefix_affinity_route(ENGINES, LoadBound(1.0, slack=0))) == (round(2 / 3, 4), 0, 2.0)


def test_the_cache_aware_model_follows_a_match_above_its_threshold_else_the_smallest_tree() -> None:
    route = build_cache_aware_route(ENGINES)
    idle = dict.fromkeys(ENGINES, 0)
    assert route(idle, (1, 2, 3)) == "engine-0"  # no match, equal trees: the first
    assert route(idle, (4, 5, 6)) == "engine-1"  # the smaller tree
    assert route(idle, (1, 2, 3, 7)) == "engine-0"  # 3 of 4 blocks matched there: above 0.3
    assert route(idle, (1, 8, 9, 10)) == "engine-1"  # 1 of 4 is not: the smaller tree (3 < 4)
    # Past both balance thresholds (> 64 apart and > 1.5x), the least loaded, whatever it holds.
    assert route({"engine-0": 100, "engine-1": 10}, (1, 2, 3)) == "engine-1"
    assert route({"engine-0": 60, "engine-1": 10}, (1, 2, 3, 7)) == "engine-0"  # 50 apart: the match
