"""The autoscaling benchmark: its simulated fleet, workloads, baselines and report."""

from __future__ import annotations

import io
import json
import math
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest
from bench.autoscale import policies as pol
from bench.autoscale.cli import DEFAULT_TRACE, BenchConfig, build_workload, main, run_benchmark
from bench.autoscale.report import METRIC_KEYS, percentile, reversals, summarize
from bench.autoscale.sim import Observation, Plan, SimParams, prometheus_rate, simulate
from bench.autoscale.workload import Workload, compress_time, load_azure_csv, scale_load, synthetic_bursty

PARAMS = SimParams(seed=1)


def short_synthetic(seconds: float = 600.0, load: float = 1.0) -> Workload:
    w = synthetic_bursty(seed=1, load_scale=load, duration=seconds)
    return Workload(w.name, w.arrivals, w.context_tokens, w.generated_tokens, seconds)


def steady(n: int, every: float, context: int = 500, generated: int = 100) -> Workload:
    arrivals = tuple(i * every for i in range(n))
    return Workload("steady", arrivals, (context,) * n, (generated,) * n, arrivals[-1])


class Fixed:
    """An autoscaler that always wants the same replicas."""

    name = "fixed"
    interval = 15.0
    uses_prometheus = True

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.seen: list[Observation] = []

    def decide(self, now: float, obs: Observation, current: int, ready: int) -> int:
        self.seen.append(obs)
        return self.replicas


def test_service_time_grows_with_tokens_and_mildly_with_batch_occupancy() -> None:
    p = SimParams()
    assert p.service_time(1000, 0, 0.0) == pytest.approx(0.15)
    assert p.service_time(0, 100, 0.0) == pytest.approx(2.0)
    assert p.service_time(0, 100, 1.0) == pytest.approx(3.0)


@pytest.mark.parametrize("policy", [Plan("tiny", initial_ready=1), Fixed(3), Plan("big", initial_ready=30)])
def test_every_request_is_served_or_counted(policy: Plan | Fixed) -> None:
    w = short_synthetic(load=2.0)
    result = simulate(w, PARAMS, policy, initial_replicas=1)
    assert result.completed + result.in_flight + result.unserved == len(w)
    assert result.completed == len(w)  # the run goes on after the last arrival until all are done
    assert len(result.waits) == len(w)
    assert all(x >= 0 and not math.isnan(x) for x in result.waits)


def test_unfinished_requests_at_the_drain_limit_are_counted_as_unserved() -> None:
    w = steady(400, 0.05, generated=2000)  # 20 req/s of 40-60 s each on one replica
    result = simulate(
        w, replace(PARAMS, drain_limit_s=30.0), Plan("one", initial_ready=1), initial_replicas=1
    )
    assert result.unserved > 0
    assert result.completed + result.in_flight + result.unserved == len(w)


def test_a_replica_given_back_mid_request_counts_its_drain_apart() -> None:
    # One 1000-token decode (20 s) on one replica, removed at t=5 s: it drains until the request ends.
    w = Workload("one", (0.0,), (500,), (1000,), 100.0)
    result = simulate(w, PARAMS, Plan("drain", initial_ready=1, removals=(5.0,)), initial_replicas=1)
    assert result.completed == 1
    end = PARAMS.service_time(500, 1000, 0.0)
    assert result.gpu_seconds == pytest.approx(end * PARAMS.gpus_per_replica, rel=0.05)
    assert result.draining_gpu_seconds == pytest.approx((end - 5.0) * PARAMS.gpus_per_replica, rel=0.05)


@pytest.mark.parametrize(
    ("take_back", "second_wait", "replica_seconds"), [(True, 0.0, 100.0), (False, 58.0, 110.0)]
)
def test_the_oracle_adding_while_a_removed_replica_drains_serves_with_that_one_again(
    take_back: bool, second_wait: float, replica_seconds: float
) -> None:
    # A 20 s decode from t=0; the replica is given back at 5 s and one is asked for at 10 s
    # (60 s cold start) for a request at 12 s: the draining replica takes it at once.
    w = Workload("two", (0.0, 12.0), (500, 100), (1000, 10), 100.0)
    plan = Plan("p", initial_ready=1, adds=((10.0, 60.0),), removals=(5.0,), take_back_draining=take_back)
    result = simulate(w, PARAMS, plan, initial_replicas=1)
    assert result.waits[1] == pytest.approx(second_wait, abs=0.5)
    # One replica for the whole 100 s, or the drained one until its decode ends (20 s) and the
    # new one from 10 s.
    assert result.gpu_seconds == pytest.approx(replica_seconds * PARAMS.gpus_per_replica, rel=0.02)


def test_the_oracle_keeps_the_candidate_plan_that_meets_the_slo_cheapest() -> None:
    from bench.autoscale.cli import run_oracle

    w = short_synthetic(load=2.0)
    need = pol.oracle_needs(w, PARAMS, 2.0, 1, cap=60)
    kept = run_oracle(w, PARAMS, need, pol.initial_replicas(need, 1), slo_s=2.0)
    candidates = [
        simulate(w, PARAMS, pol.oracle_plan(need, PARAMS, w.horizon, b, t))
        for b in pol.ORACLE_BRIDGES_S
        for t in (True, False)
    ]
    meeting = [r for r in candidates if summarize(r, 2.0, w.horizon, 1)["slo_attainment"] >= pol.SLO_TARGET]
    assert meeting  # the search sized it for the SLO
    assert kept.gpu_seconds == min(r.gpu_seconds for r in meeting)


def test_a_big_enough_static_fleet_never_queues() -> None:
    w = short_synthetic(load=2.0)
    result = simulate(w, PARAMS, Plan("big", initial_ready=30))
    assert max(result.waits) == 0.0
    assert result.gpu_seconds == pytest.approx(30 * w.horizon)


def test_a_tiny_fleet_misses_the_slo() -> None:
    w = short_synthetic(load=2.0)
    result = simulate(w, PARAMS, Plan("tiny", initial_ready=1))
    attained = sum(1 for x in result.waits if x <= 2.0) / len(w)
    assert attained < 0.5


def test_cold_start_delays_capacity() -> None:
    # 3 req/s of ~3.5 s each need about 11 slots: 1 replica of 4 slots queues until help comes
    w = steady(600, 1 / 3)
    p = SimParams(concurrency=4, seed=1)
    fast = simulate(w, p, Plan("fast", initial_ready=1, adds=((0.0, 10.0),) * 3))
    slow = simulate(w, p, Plan("slow", initial_ready=1, adds=((0.0, 120.0),) * 3))
    assert max(fast.waits) < 10.0
    assert max(slow.waits) > 60.0  # nobody extra started serving before t=120
    first_after = [x for a, x in zip(w.arrivals, slow.waits, strict=True) if 125 < a < 200]
    assert max(first_after) < max(slow.waits)  # the queue drains once the 3 replicas are ready
    assert slow.gpu_seconds == pytest.approx(4 * w.horizon)  # starting replicas are paid for


def test_autoscalers_see_prometheus_scrapes_of_ready_replicas_only() -> None:
    w = steady(600, 1 / 3)
    probe = Fixed(2)
    simulate(w, SimParams(concurrency=4, seed=1, cold_start_min=100, cold_start_max=100), probe, 1)
    # ticks at 15 s: the newly requested replica is not counted until it is ready at t=115
    assert {o.ready for o in probe.seen[:6]} == {1}
    assert probe.seen[0].running == 4.0
    assert probe.seen[0].waiting is not None
    assert probe.seen[0].waiting > 0
    assert probe.seen[-1].ready == 2


def test_scale_events_and_reversals_are_counted_from_replica_changes() -> None:
    changes = [(0.0, 1, 3), (15.0, 3, 5), (30.0, 5, 4), (45.0, 4, 6), (60.0, 6, 2)]
    assert reversals(changes) == 3
    assert reversals([]) == 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0
    assert percentile([], 0.95) == 0.0


def test_load_scaling_superposes_copies_and_thins_the_rest() -> None:
    w = short_synthetic()
    doubled = scale_load(w, 2.0, seed=0)
    assert len(doubled) == 2 * len(w)
    assert list(doubled.arrivals) == sorted(doubled.arrivals)
    assert doubled.horizon == w.horizon
    half = scale_load(w, 2.5, seed=0)
    assert 2.4 * len(w) < len(half) < 2.6 * len(w)
    thinned = scale_load(w, 0.5, seed=0)
    assert 0.4 * len(w) < len(thinned) < 0.6 * len(w)
    fast = compress_time(w, 2.0)
    assert fast.horizon == w.horizon / 2
    assert len(fast) == len(w)


def test_azure_csv_is_read_as_seconds_from_the_first_request(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "not a date,1,1\n"
    )
    w = load_azure_csv(csv)
    assert w.arrivals == pytest.approx((0.0, 4.314579))
    assert w.context_tokens == (374, 396)
    assert w.generated_tokens == (44, 109)


def test_the_shared_trace_loads() -> None:
    w = load_azure_csv(DEFAULT_TRACE)
    assert len(w) == 19366
    assert 3400 < w.horizon < 3600


def test_the_oracle_needs_fewer_gpu_hours_than_static_peak_and_meets_the_slo() -> None:
    w = short_synthetic(seconds=900, load=2.0)
    report, _ = run_benchmark(w, PARAMS, BenchConfig(policies=("static-peak", "oracle", "inferfleet", "hpa")))
    m = report["policies"]
    assert m["oracle"]["gpu_hours"] <= m["static-peak"]["gpu_hours"]
    assert m["oracle"]["slo_attainment"] >= 0.99
    assert m["static-peak"]["slo_attainment"] >= 0.99
    assert set(report["targets"]) >= {"gpu_hours_le_0.8x_hpa", "reversals_le_0.5x_hpa", "all_hold"}


def test_oracle_plan_requests_each_replica_one_cold_start_ahead() -> None:
    need = [(0.0, 1), (600.0, 3), (900.0, 1)]
    plan = pol.oracle_plan(need, SimParams(seed=3), horizon=1200.0)
    assert plan.initial_ready == 1
    assert len(plan.adds) == 2
    assert plan.removals == (900.0, 900.0)
    for requested, cold in plan.adds:
        assert requested + cold == pytest.approx(600.0)


def test_json_output_has_the_documented_keys() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["--synthetic", "bursty", "--duration", "600", "--json", "--seed", "2"]) == 0
    report = json.loads(out.getvalue())
    assert set(report) >= {"trace", "params", "policies"}
    assert report["trace"] == "synthetic-bursty"
    assert set(report["policies"]) == {
        "inferfleet",
        "inferfleet-gateway",
        "hpa",
        "keda",
        "kubeai",
        "static-peak",
        "oracle",
    }
    for metrics in report["policies"].values():
        assert set(METRIC_KEYS) <= set(metrics)
        assert 0.0 <= metrics["slo_attainment"] <= 1.0
    assert report["params"]["seed"] == 2
    assert report["policies"]["hpa"]["gpu_hours_vs_hpa"] == 1.0


def test_the_table_prints_ratios_and_targets(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--synthetic", "bursty", "--duration", "300", "--png", str(tmp_path / "plot.png")]) == 0
    text = capsys.readouterr().out
    assert "vs HPA" in text
    assert "vs orac." in text
    assert "issue targets for inferfleet:" in text
    assert "issue targets for inferfleet-gateway:" in text


def test_build_workload_applies_scale_compression_and_duration() -> None:
    w = build_workload(None, "bursty", 2.0, 2.0, 600.0, seed=0)
    assert w.horizon == 600.0
    assert all(a < 600.0 for a in w.arrivals)
    with pytest.raises(ValueError, match="unknown synthetic"):
        build_workload(None, "flat", 1.0, 1.0, None, seed=0)


def test_autoscalers_see_the_completion_rate_of_the_last_minute() -> None:
    # one request every 0.5 s, 500 prompt + 100 output tokens: a steady fleet finishes 2 per second
    w = steady(1200, 0.5)
    probe = Fixed(4)
    simulate(w, SimParams(seed=1), probe, 4)
    rates = [o.completion_rate for o in probe.seen]
    assert all(r is not None for r in rates)
    # Little's law holds for what the policy sees: running = completion rate x service time
    later = [o for o in probe.seen if o.completion_rate is not None][8:-8]
    assert all(o.completion_rate == pytest.approx(2.0, abs=0.1) for o in later)
    assert all((o.running or 0) / (o.completion_rate or 1) == pytest.approx(2.1, abs=0.4) for o in later)


@pytest.mark.parametrize(
    ("samples", "now", "expected"),
    [
        pytest.param([], 60.0, None, id="no scrape yet"),
        pytest.param([(0.0, 0.0)], 0.0, None, id="one scrape"),
        pytest.param([(0.0, 0.0), (15.0, 30.0)], 15.0, 0.5, id="start: not back past the counter's zero"),
        pytest.param(
            [(0.0, 0.0), (15.0, 30.0), (30.0, 60.0), (45.0, 90.0), (60.0, 120.0)],
            60.0,
            2.0,
            id="full window, extrapolated to its start",
        ),
        pytest.param(
            [(0.0, 0.0), (15.0, 60.0), (30.0, 90.0), (45.0, 120.0), (60.0, 150.0)],
            60.0,
            2.0,
            id="a scrape exactly one window old is outside it",
        ),
        pytest.param(
            [(45.0, 90.0), (60.0, 120.0), (75.0, 150.0), (90.0, 180.0), (105.0, 210.0)],
            90.0,
            2.0,
            id="scrapes after now are not seen",
        ),
        pytest.param([(15.0, 30.0), (30.0, 60.0)], 60.0, 1.25, id="last scrape 30 s old: half an interval"),
        pytest.param([(30.0, 40.0), (45.0, 40.0), (60.0, 40.0)], 60.0, 0.0, id="no arrivals"),
    ],
)
def test_the_door_rate_is_promql_rate_over_the_scraped_counter(
    samples: list[tuple[float, float]], now: float, expected: float | None
) -> None:
    rate = prometheus_rate(samples, now, 60.0)
    assert rate == (None if expected is None else pytest.approx(expected))


def step(before: float, after: float, at: float, until: float) -> Workload:
    """`before` requests/s until `at`, then `after` requests/s until `until`."""
    first = [i / before for i in range(int(at * before))]
    arrivals = tuple(first + [at + i / after for i in range(int((until - at) * after))])
    n = len(arrivals)
    return Workload("step", arrivals, (500,) * n, (100,) * n, arrivals[-1])


def test_the_door_rate_is_read_at_the_scrape_interval_and_lag_like_the_engine_counters() -> None:
    w = step(1.0, 4.0, at=300.0, until=600.0)
    seen = {}
    for lag in (0.0, 60.0):
        probe = Fixed(20)
        simulate(w, SimParams(seed=1, scrape_lag=lag), probe, 20)
        seen[lag] = probe.seen
        before = [o.arrival_rate for o in probe.seen[8:18]]  # ticks at 135..270 s
        assert all(r == pytest.approx(1.0, abs=0.05) for r in before)
    first_high = {
        lag: next(i for i, o in enumerate(obs) if (o.arrival_rate or 0) > 3.9) for lag, obs in seen.items()
    }
    assert first_high[60.0] - first_high[0.0] == 4  # 60 s of lag is four 15 s ticks
    assert seen[60.0][0].arrival_rate is None  # at 15 s nothing scraped 60 s earlier


def test_only_the_gateway_arm_reads_the_arrival_rate_counted_at_the_door() -> None:
    w = step(2.0, 2.0, at=0.0, until=300.0)
    probe = Fixed(3)
    simulate(w, SimParams(seed=1), probe, 3)
    scaling = pol.inferfleet_policy(pol.FleetLimits(1, 6, 4.0, 32))
    engine = pol.InferfleetPolicy(scaling, 3)
    gateway = pol.InferfleetPolicy(scaling, 3, gateway=True)
    assert gateway.name == "inferfleet-gateway"
    for obs in probe.seen[4:]:
        assert obs.arrival_rate == pytest.approx(2.0, abs=0.05)
        assert engine.sample(obs).arrival_rate is None
        assert gateway.sample(obs).arrival_rate == obs.arrival_rate
        assert (gateway.sample(obs).waiting, gateway.sample(obs).running) == (obs.waiting, obs.running)
        assert gateway.sample(obs).completion_rate == engine.sample(obs).completion_rate


def test_with_no_replica_ready_the_gateway_arm_still_sees_its_queue() -> None:
    obs = Observation(None, None, 0, None, arrival_rate=1.5, gateway_queued=7.0, gateway_in_flight=2.0)
    scaling = pol.inferfleet_policy(pol.FleetLimits(0, 6, 4.0, 32))
    engine = pol.InferfleetPolicy(scaling, 1).sample(obs)
    gateway = pol.InferfleetPolicy(scaling, 1, gateway=True).sample(obs)
    assert (engine.waiting, engine.running, engine.arrival_rate) == (None, None, None)
    assert (gateway.waiting, gateway.running, gateway.arrival_rate) == (7.0, 2.0, 1.5)


def test_the_gateway_refuses_past_its_queue_bound_and_timeout_and_the_door_still_counts() -> None:
    # 3 req/s of ~3.5 s each on one replica of 4 slots: the queue grows by about 2 per second
    w = steady(300, 1 / 3)
    probe = Fixed(1)
    bounded = SimParams(concurrency=4, seed=1, queue_timeout_s=30.0, max_queued=50)
    result = simulate(w, bounded, probe, 1)
    assert result.refused
    assert result.completed + len(result.refused) == len(w)
    assert all(result.waits[k] <= 30.0 for k in result.refused)
    assert max(o.waiting or 0 for o in probe.seen) <= 50
    later = probe.seen[6:-6]
    assert all(o.arrival_rate == pytest.approx(3.0, abs=0.1) for o in later)
    assert all((o.completion_rate or 0) < 1.5 for o in later)  # the engines see what they finish
    m = summarize(result, 2.0, w.horizon, 1)
    assert m["refused"] == len(result.refused)
    served_in_time = sum(1 for k, x in enumerate(result.waits) if x <= 2.0 and k not in set(result.refused))
    assert m["slo_attainment"] == pytest.approx(served_in_time / len(w), abs=1e-5)
