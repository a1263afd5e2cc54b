"""Scale-down victims: the pods whose removal loses the least get the lowest deletion cost."""

import promql_parser as pp
import pytest

from inferfleet.planning.victims import (
    PodLoad,
    build_pod_load_query,
    compute_deletion_costs,
    parse_pod_loads,
    plan_deletion_cost_patches,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("loads", "cheapest_first"),
    [
        pytest.param(
            {"a": PodLoad(3, 0), "b": PodLoad(0, 0), "c": PodLoad(1, 0)}, ["b", "c", "a"], id="in-flight"
        ),
        pytest.param(
            {"warm": PodLoad(2, 900.0), "cold": PodLoad(2, 10.0), "busy": PodLoad(5, 0.0)},
            ["cold", "warm", "busy"],
            id="equal-in-flight-then-coldest-cache",
        ),
        pytest.param(
            {"idle-warm": PodLoad(0, 500.0), "busy-cold": PodLoad(1, 0.0)},
            ["idle-warm", "busy-cold"],
            id="in-flight-before-cache",
        ),
        pytest.param({"b": PodLoad(1, 1), "a": PodLoad(1, 1)}, ["a", "b"], id="ties-by-name"),
    ],
)
def test_the_cheapest_loss_gets_the_lowest_cost(loads: dict[str, PodLoad], cheapest_first: list[str]) -> None:
    costs = compute_deletion_costs(loads)
    assert sorted(costs, key=costs.__getitem__) == cheapest_first
    assert sorted(costs.values()) == list(range(len(loads)))


def test_only_changed_annotations_are_patched_and_unknown_pods_tie_with_the_cheapest() -> None:
    costs = {"a": 0, "b": 1, "c": 2}
    current = {"a": "0", "b": "2", "c": None, "new": None}
    assert plan_deletion_cost_patches(current, costs) == {"b": 1, "c": 2, "new": 0}
    assert plan_deletion_cost_patches({"a": "0", "b": "1", "c": "2"}, costs) == {}
    assert plan_deletion_cost_patches({"x": None}, {}) == {"x": 0}


def test_pod_loads_are_read_from_the_query_result() -> None:
    def series(pod: str | None, load: str, value: str) -> dict[str, object]:
        metric = {"inferfleet_load": load} | ({"pod": pod} if pod else {})
        return {"metric": metric, "value": [0, value]}

    result = [
        series("p1", "in_flight", "2"),
        series("p1", "cache_hit_rate", "120.5"),
        series("p2", "in_flight", "0"),
        series("p3", "cache_hit_rate", "7"),  # no in-flight series: load unknown
        series("p4", "in_flight", "NaN"),
        series("p5", "in_flight", "-1"),
        series(None, "in_flight", "4"),
        series("p6", "other", "1"),
    ]
    assert parse_pod_loads(result) == {"p1": PodLoad(2.0, 120.5), "p2": PodLoad(0.0, 0.0)}


def test_every_selector_of_the_query_is_one_services_pods() -> None:
    selectors: list[pp.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, pp.VectorSelector):
            selectors.append(node)

    pp.walk(pp.parse(build_pod_load_query("team-a", "chat")), visit)
    names = {s.name for s in selectors}
    assert {"vllm:num_requests_running", "vllm:prefix_cache_hits_total", "sglang:num_queue_reqs"} <= names
    for selector in selectors:
        matchers = [(m.name, m.op, m.value) for m in selector.matchers.matchers]
        assert ("namespace", pp.MatchOp.Equal, "team-a") in matchers
        assert ("inferfleet_io_service", pp.MatchOp.Equal, "chat") in matchers
