"""The benchmark's bounds and what the policy learns: the reactive oracle, the learned starts."""

from __future__ import annotations

from bench.autoscale import policies as pol
from bench.autoscale.frontier import ReactiveOracle
from bench.autoscale.report import summarize
from bench.autoscale.sim import Fleet, Observation, Plan, SimParams, simulate
from bench.autoscale.workload import Workload

PARAMS = SimParams(seed=3, cold_start_min=60.0, cold_start_max=60.0)


def steady(n: int, every: float, start: float = 0.0) -> Workload:
    arrivals = tuple(start + i * every for i in range(n))
    return Workload("steady", arrivals, (500,) * n, (100,) * n, arrivals[-1])


def test_the_initial_replicas_are_not_learned_as_instant_starts() -> None:
    fleet = Fleet(steady(100, 1.0), PARAMS, Plan("p", initial_ready=2, adds=((5.0, 60.0),)))
    fleet.setup(2)
    fleet.run()
    starts = [p.ready - p.created for p in fleet.pod_starts() if p.ready is not None]
    assert starts == [60.0]  # the added replica; the two ready at t=0 started before the trace


def test_the_learned_start_is_the_real_one_once_a_replica_has_started() -> None:
    w = steady(4000, 0.05)  # 20 requests/s of 2.1 s each: about 42 slots, 2 replicas at 32
    limits = pol.FleetLimits(1, 4, 4.0, 32)
    policy = pol.InferfleetPolicy(pol.inferfleet_policy(limits), 1)
    simulate(w, PARAMS, policy, initial_replicas=1)
    assert policy.expected_start == 60.0


def test_the_reactive_oracle_pays_the_cold_start_that_the_oracle_plans_around() -> None:
    burst = Workload(
        "burst", tuple(120.0 + i * 0.02 for i in range(6000)), (500,) * 6000, (100,) * 6000, 240.0
    )
    need = [(0.0, 1), (120.0, 6)]
    react = simulate(burst, PARAMS, ReactiveOracle(need, 0, 6, 60.0), initial_replicas=1)
    ahead = simulate(burst, PARAMS, Plan("ahead", 1, adds=((60.0, 60.0),) * 5), initial_replicas=1)
    slo = [summarize(r, 2.0, burst.horizon, 1)["slo_attainment"] for r in (react, ahead)]
    assert slo[0] < 0.9 <= slo[1]
    assert max(after for _, _, after in react.replica_changes) == 6


def test_without_hindsight_the_reactive_oracle_releases_as_a_scale_down_window_does() -> None:
    need = [(0.0, 5), (100.0, 1), (400.0, 5)]  # a lull from 100 s to 400 s
    calm = Observation(waiting=0.0, running=10.0, ready=5)
    ahead = ReactiveOracle(need, 0, 8, bridge_s=150.0)
    present = ReactiveOracle(need, 0, 8, bridge_s=150.0, hindsight=False)
    assert present.decide(200.0, calm, 5, 5) == 5  # the need of 5 was seen 150 s ago
    assert present.decide(300.0, calm, 5, 5) == 1  # not since 100 s: released
    assert ahead.decide(300.0, calm, 5, 5) == 5  # it knows the need comes back at 400 s
    assert present.decide(400.0, calm, 1, 1) == ahead.decide(400.0, calm, 1, 1) == 5
