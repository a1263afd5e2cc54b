"""The frontier behind issue 5's targets: fixed fleets and the reactive bound on the same workload."""

from __future__ import annotations

from itertools import pairwise

from bench.autoscale.frontier import JumpToMax, compute_frontier, render
from bench.autoscale.sim import Observation, SimParams
from bench.autoscale.workload import Workload, synthetic_bursty


def test_the_reactive_bound_jumps_to_max_at_the_first_queue_and_never_comes_down() -> None:
    policy = JumpToMax(max_replicas=9, initial=2)
    calm = Observation(waiting=0.0, running=10.0, ready=2)
    queued = Observation(waiting=1.0, running=64.0, ready=2)
    assert policy.decide(0.0, calm, 2, 2) == 2
    assert policy.decide(15.0, queued, 2, 2) == 9
    assert policy.decide(30.0, calm, 9, 2) == 9
    assert policy.decide(45.0, Observation(None, None, 0), 9, 0) == 9


def test_bigger_fixed_fleets_cost_more_and_never_serve_worse() -> None:
    w = synthetic_bursty(seed=1, load_scale=1.0, duration=900.0)
    workload = Workload(w.name, w.arrivals, w.context_tokens, w.generated_tokens, 900.0)
    frontier = compute_frontier(workload, SimParams(seed=1))
    fixed = [frontier["fixed"][str(n)] for n in range(1, frontier["max_replicas"] + 1)]
    assert all(a["gpu_hours"] < b["gpu_hours"] for a, b in pairwise(fixed))
    assert all(a["slo_attainment"] <= b["slo_attainment"] + 1e-9 for a, b in pairwise(fixed))
    cheapest = frontier["cheapest_fixed_meeting_slo"]
    assert cheapest is not None
    assert frontier["fixed"][str(cheapest)]["slo_attainment"] >= 0.99
    assert cheapest == 1 or frontier["fixed"][str(cheapest - 1)]["slo_attainment"] < 0.99
    assert frontier["oracle"]["gpu_hours"] <= frontier["fixed"][str(cheapest)]["gpu_hours"]
    text = render(frontier)
    assert f"cheapest fixed fleet with SLO >= 0.99: {cheapest} replicas" in text
    assert "reactive bound" in text
