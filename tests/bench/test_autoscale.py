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
from bench.autoscale.report import METRIC_KEYS, percentile, reversals
from bench.autoscale.sim import Observation, Plan, SimParams, simulate
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
    assert set(report["policies"]) == {"inferfleet", "hpa", "keda", "kubeai", "static-peak", "oracle"}
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
    assert "issue targets for inferfleet" in text


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
