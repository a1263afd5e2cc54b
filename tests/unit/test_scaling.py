"""The queue-depth scaling policy: exact decision sequences, tick by tick.

Every table is a list of ticks `(t, waiting, running, ready, expected replicas, expected reason)`;
`ready` None means every current replica is ready. The replicas a tick starts from are the ones
the previous tick decided, as the operator would have written them to spec.replicas.

With the policy `P` below a replica runs 10 requests (scale-up above 9.5 running per replica,
keep replicas while the window saw more than 8.5) and may have 2 waiting.

`FlowTick`s also carry the completion rate (requests finished per second over the last minute),
with which the policy sizes the queue by arrivals and service time instead of by its length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

import pytest

from inferfleet.planning.scaling import (
    ScalerState,
    ScalingDecision,
    ScalingPolicy,
    ScalingSample,
    compute_scaling_decision,
    estimate_flow,
    replicas_for,
)

P = ScalingPolicy(min_replicas=1, max_replicas=10, target_queue_depth=2, max_concurrent_requests=10)
NO_TREND = replace(P, trend_window_seconds=0)

Tick = tuple[float, float | None, float | None, int | None, int, str]
FlowTick = tuple[float, float | None, float | None, float | None, int | None, int, str]


def run(
    policy: ScalingPolicy, replicas: int, ticks: Sequence[Tick], state: ScalerState | None = None
) -> tuple[list[tuple[int, str]], ScalerState, list[ScalingDecision]]:
    state = state or ScalerState()
    got: list[tuple[int, str]] = []
    decisions: list[ScalingDecision] = []
    for t, waiting, running, ready, _, _ in ticks:
        d, state = compute_scaling_decision(
            ScalingSample(waiting, running), policy, replicas, replicas if ready is None else ready, state, t
        )
        got.append((d.replicas, d.reason))
        decisions.append(d)
        replicas = d.replicas
    return got, state, decisions


def run_flow(
    policy: ScalingPolicy, replicas: int, ticks: Sequence[FlowTick], state: ScalerState | None = None
) -> tuple[list[tuple[int, str]], ScalerState, list[ScalingDecision]]:
    state = state or ScalerState()
    got: list[tuple[int, str]] = []
    decisions: list[ScalingDecision] = []
    for t, waiting, running, rate, ready, _, _ in ticks:
        d, state = compute_scaling_decision(
            ScalingSample(waiting, running, rate),
            policy,
            replicas,
            replicas if ready is None else ready,
            state,
            t,
        )
        got.append((d.replicas, d.reason))
        decisions.append(d)
        replicas = d.replicas
    return got, state, decisions


def expected(ticks: Sequence[Tick] | Sequence[FlowTick]) -> list[tuple[int, str]]:
    return [(replicas, reason) for *_, replicas, reason in ticks]


def test_the_recommendation_is_the_larger_of_batch_headroom_and_queue_per_replica() -> None:
    assert replicas_for(0, 0, P, 0.95) == 0
    assert replicas_for(0, 19, P, 0.95) == 2  # 19 / 9.5
    assert replicas_for(0, 20, P, 0.95) == 3
    assert replicas_for(0, 20, P, 0.85) == 3  # 20 / 8.5
    assert replicas_for(30, 20, P, 0.95) == 5  # (20 + 30) / (10 + 2)
    assert replicas_for(4, 40, P, 0.95) == 5  # 40 / 9.5 > 44 / 12


BURST: list[Tick] = [
    (0, 0, 10, None, 2, "Steady"),
    # the queue jumps: (20 running + 30 waiting) / 12 per replica = 5
    (15, 30, 20, 2, 5, "QueueAboveTarget"),
    # 80 / 12 wants 7, but 2 ready replicas may at most become 2 + max(4, 2) = 6
    (30, 60, 20, 2, 6, "QueueAboveTarget"),
    # the queue keeps growing while 4 replicas start: no runaway, wait for them
    (45, 90, 20, 2, 6, "ReplicasStarting"),
    (60, 120, 20, 2, 6, "ReplicasStarting"),
    # they are up; 60 running on 6 is above 95% of 60 slots
    (75, 10, 60, 6, 7, "LoadAboveCapacity"),
    # the burst is over: 30 running needs 4, but the window saw 10
    (90, 0, 30, 7, 7, "StabilizingScaleDown"),
]


def test_burst_scales_up_at_once_without_running_away_during_cold_starts() -> None:
    got, _, decisions = run(P, 2, BURST)
    assert got == expected(BURST)
    assert [d.direction for d in decisions] == ["none", "up", "up", "none", "none", "up", "none"]
    assert decisions[2].recommendation == 7
    assert "waiting for 4 starting replicas" in decisions[3].message


def test_the_flow_is_completions_plus_growth_and_the_service_time_littles_law() -> None:
    # 10 then 20 running (mean 15) while 4 finish per second: 3.75 s each; the load grew by 40
    # in 15 s, so 4 + 2.67 arrive per second.
    # (the samples are the policy's: (time, running, waiting), this tick's last)
    arrivals, service = estimate_flow(30, 20, 4.0, ((0, 10, 0), (15, 20, 30)), P, 15) or (0.0, 0.0)
    assert (round(arrivals, 3), service) == (6.667, 3.75)
    # (6.67 x 3.75 = 25 slots) / 9.5 + the backlog 30 x 3.75 slot-seconds over 120 s / 10 = 2.7
    assert replicas_for(30, 20, P, 0.95, (arrivals, service)) == 3
    assert replicas_for(30, 20, P, 0.95) == 5  # without the rate: (20 + 30) / 12
    # samples older than the one-minute window do not count
    assert estimate_flow(0, 20, 4.0, ((0, 100, 50), (60, 20, 0), (75, 20, 0)), P, 75) == (4.0, 5.0)
    # no rate (engine without a counter), or requests running that never finish in a minute: unknown
    assert estimate_flow(30, 20, None, (), P, 15) is None
    assert estimate_flow(30, 20, 0.0, ((0, 20, 0), (15, 20, 30)), P, 15) is None
    assert estimate_flow(0, 0, 0.0, (), P, 15) == (0.0, 0.0)  # idle
    assert estimate_flow(30, 20, 4.0, (), replace(P, arrival_window_seconds=0), 15) is None


# The BURST load again, now with the engines' completion rate: 2 full replicas finish 4 requests
# a second while about 6 arrive. The fleet needs 6 x ~4.4 s = 27 slots for the arrivals, 3 full
# replicas, not the 6 that counting each waiting request as load asks for. Every slot is busy
# and the queue grows, so it does not drain: its backlog is sized to drain in 15 s
# (`saturated_drain_seconds`), and it is the backlog the new replicas will meet, grown at its
# pace (2 a second) over their expected start (120 s, nothing learned yet): 270, not 30.
# (Until issue 16 it drained over 120 s: 3 replicas at t=15 and 4 from t=45, the under-sizing
# of a saturated fleet whose completions hide the load; until the projected backlog, 4 at t=15
# and 6 only at t=45, the replicas of each tick meeting a queue a cold start longer.)
BURST_FLOW: list[FlowTick] = [
    (0, 0, 10, 2.0, None, 2, "Steady"),
    # 6.67 arrive per second, 3.75 s each: 25 slots / 9.5 + 270 x 3.75 / (10 x 15) -> 10,
    # but no more than doubling the 2 ready ones (at least +4): 6
    (15, 30, 20, 4.0, 2, 6, "QueueAboveTarget"),
    # the queue still grows: no runaway while the 4 start
    (30, 60, 20, 4.0, 2, 6, "ReplicasStarting"),
    (45, 90, 20, 4.0, 2, 6, "ReplicasStarting"),
    (60, 120, 20, 4.0, 2, 6, "ReplicasStarting"),
    (75, 10, 30, 6.0, None, 6, "StabilizingScaleDown"),
    (90, 0, 30, 6.0, None, 6, "StabilizingScaleDown"),
]


def test_with_a_completion_rate_a_burst_is_sized_by_its_arrivals_not_its_backlog() -> None:
    got, _, decisions = run_flow(P, 2, BURST_FLOW)
    assert got == expected(BURST_FLOW)
    assert [d.recommendation for d in decisions] == [2, 10, 12, 13, 14, 4, 4]
    assert "saturated: every slot busy, the queue does not drain" in decisions[1].message
    # the same ticks without the rate are the BURST sequence (the queue as load: 5 at once)
    without: list[FlowTick] = [(t, w, r, None, ready, 0, "") for t, w, r, _, ready, _, _ in BURST_FLOW]
    got, _, _ = run_flow(P, 2, without)
    assert [n for n, _ in got] == [2, 5, 6, 6, 6, 6, 6]


# Issue 16's measured failure, scaled down: 4 replicas ready and 1 starting, every slot busy,
# completions capped at 8 per second (5 s each) and 16-20 requests waiting tick after tick.
# The flow balance sees about 9 arrivals a second: 45 slots, the 5 replicas the fleet already
# has. But the queue does not drain, so more arrive than complete; sized to drain in 15 s the
# backlog the new replicas will meet (16 growing 16 / 15 a second for the 120 s of a start)
# it asks for 10, 8 at once (the step limit: 4 ready + 4), where draining today's 16 in 15 s
# asked for 6, and draining it over 120 s kept 5 (and every newcomer waited 2-3 s).
HOVERING: list[FlowTick] = [
    (0, 0, 40, 8.0, 4, 5, "Steady"),
    # 8 + 16 / 15 arrive, 5 s each: 45 slots / 9.5 + (16 + 1.07 x 120) x 5 / (10 x 15) -> 10
    (15, 16, 40, 8.0, 4, 8, "QueueAboveTarget"),
    (30, 20, 40, 8.0, 4, 8, "ReplicasStarting"),
    (45, 18, 40, 8.0, 4, 8, "ReplicasStarting"),
    (60, 18, 40, 8.0, 4, 8, "ReplicasStarting"),
]


def test_a_saturated_queue_that_does_not_drain_is_sized_to_drain_soon() -> None:
    got, _, decisions = run_flow(P, 5, HOVERING)
    assert got == expected(HOVERING)
    assert decisions[1].recommendation == 10
    assert "(saturated: every slot busy, the queue does not drain)" in decisions[1].message
    # today's backlog only: 6; and with the old 120 s drain: never more than the 5 it has
    today = replace(P, backlog_growth_share=0.0)
    assert [n for n, _ in run_flow(today, 5, HOVERING)[0]] == [5, 6, 6, 6, 6]
    old = replace(today, saturated_drain_seconds=P.tuning.backlog_drain_seconds)
    got, _, _ = run_flow(old, 5, HOVERING)
    assert [n for n, _ in got] == [5, 5, 5, 5, 5]


def test_the_backlog_is_sized_as_the_new_replicas_will_find_it() -> None:
    # 2 replicas saturated, the queue 0 -> 30 -> 60 over 30 s, 2 a second: what a replica
    # meets when Ready depends on how long it takes to start.
    state = ScalerState()
    for t, waiting in ((0, 0.0), (15, 30.0)):
        _, state = compute_scaling_decision(ScalingSample(waiting, 20, 4.0), P, 2, 2, state, t)
    sample = ScalingSample(60, 20, 4.0)
    fast, _ = compute_scaling_decision(sample, P, 2, 2, state, 30, expected_start=15)
    slow, _ = compute_scaling_decision(sample, P, 2, 2, state, 30, expected_start=300)
    # arrivals 4 + 2 = 6 a second, 5 s each: 30 slots / 9.5 = 3.2; (60 + 2 x 15) or
    # (60 + 2 x 300) requests of 5 s drained in 15 s by 10-slot replicas: + 3 or + 22
    assert (fast.recommendation, slow.recommendation) == (7, 26)
    assert (fast.replicas, slow.replicas) == (6, 6)  # both at the step limit: 2 ready + 4


def test_a_saturated_queue_that_drains_keeps_the_slow_drain() -> None:
    # 40 waiting a minute ago, 10 now: at 0.5 a second it is gone in 20 s, within 120 s
    ticks: list[FlowTick] = [
        (0, 40, 40, 8.0, None, 5, "QueueAboveTarget"),  # (no pace without a window)
        (60, 10, 40, 8.0, 4, 5, "ReplicasStarting"),
    ]
    got, _, decisions = run_flow(P, 4, ticks)
    assert got == expected(ticks)
    # the running 40 / 9.5 -> 5; the queue adds 10 x 5 / (10 x 120), not 10 x 5 / (10 x 15)
    assert decisions[1].recommendation == 5
    assert "saturated: every slot busy, the queue drains" in decisions[1].message


KvTick = tuple[float, float, float, float | None, int, str]


def run_kv(policy: ScalingPolicy, replicas: int, ticks: Sequence[KvTick]) -> list[ScalingDecision]:
    state, decisions = ScalerState(), []
    for t, waiting, running, kv, _, _ in ticks:
        sample = ScalingSample(waiting, running, 2.0, kv_cache_usage=kv)
        d, state = compute_scaling_decision(sample, policy, replicas, replicas, state, t)
        decisions.append(d)
        replicas = d.replicas
    return decisions


def test_a_full_kv_cache_is_saturation_before_the_batch_limit() -> None:
    # Long prompts: 4 replicas run 16 of their 40 slots and the KV cache is 95% full.
    ticks: list[KvTick] = [
        # no queue yet: 4 x 0.95 / 0.9 -> 5, the KV cache sized like the slots
        (0, 0, 16, 0.95, 5, "LoadAboveCapacity"),
        # 8 wait with slots free: a replica holds 3.2 now (16 / 5); 2 + 8 / 15 arrive per
        # second for 8 s each, 20 requests / (3.2 x 0.95) = 6.7 replicas, and the queue, which
        # does not drain, in 15 s: + 8 x 8 / (3.2 x 15) -> 8
        (15, 8, 16, 0.97, 8, "LoadAboveCapacity"),
    ]
    # (today's backlog: the KV sizing alone, not the backlog's growth over a start)
    decisions = run_kv(replace(P, backlog_growth_share=0.0), 4, ticks)
    assert [(d.replicas, d.reason) for d in decisions] == expected(ticks)
    assert "KV cache 95%" in decisions[0].message
    assert "(saturated: KV cache 97% full" in decisions[1].message


def test_missing_or_low_kv_data_changes_nothing() -> None:
    ticks: list[KvTick] = [
        (float(t), w, r, None, 0, "") for t, w, r in ((0, 0, 16), (15, 8, 16), (30, 4, 20))
    ]
    without = run_kv(P, 4, ticks)
    for kv in (float("nan"), -1.0, 0.3):
        got = run_kv(P, 4, [(t, w, r, kv, n, why) for t, w, r, _, n, why in ticks])
        assert [(d.replicas, d.reason, d.recommendation) for d in got] == [
            (d.replicas, d.reason, d.recommendation) for d in without
        ]
    assert [d.replicas for d in without] == [4, 4, 4]


def test_a_missing_rate_falls_back_to_the_queue_and_missing_queues_still_hold() -> None:
    _, state, _ = run_flow(P, 4, BURST_FLOW[:2])
    # the rate is gone for a tick (a pod restarted its counter): the queue alone sizes it
    d, state = compute_scaling_decision(ScalingSample(60, 20, None), P, 3, 2, state, 30)
    assert (d.replicas, d.recommendation) == (6, 7)
    # a rate without queue samples is no data: hold, never down
    d, _ = compute_scaling_decision(ScalingSample(None, None, 4.0), P, 6, 6, state, 45)
    assert (d.replicas, d.reason) == (6, "MetricsUnavailable")


def test_after_a_burst_the_window_holds_then_replicas_go_one_per_minute() -> None:
    _, state, _ = run(NO_TREND, 2, BURST)
    tail: list[Tick] = [(float(t), 0, 30, None, 7, "StabilizingScaleDown") for t in range(105, 375, 15)]
    tail += [
        # t=75 (10 waiting on 6) was the last high recommendation: at t=375 it leaves the window
        (375, 0, 30, None, 6, "LoadBelowCapacity"),
        (390, 0, 30, None, 6, "StabilizingScaleDown"),  # one scale-down a minute at most
        (420, 0, 30, None, 6, "StabilizingScaleDown"),
        (435, 0, 30, None, 5, "LoadBelowCapacity"),
        (495, 0, 30, None, 4, "LoadBelowCapacity"),
        (510, 0, 30, None, 4, "Steady"),  # 30 running fit 4 x 8.5
    ]
    got, _, decisions = run(NO_TREND, 7, tail, state)
    assert got == expected(tail)
    assert "highest in 300s is 10" in decisions[0].message
    assert "pacing: last scale-down 15s ago" in decisions[-5].message


RAMP = [(15.0 * i, 0.0, 30.0 + i) for i in range(21)]  # one more running request per tick


def test_a_ramp_gets_its_replicas_a_lookahead_early_from_the_trend() -> None:
    ticks: list[Tick] = [(t, w, r, None, 0, "") for t, w, r in RAMP]
    without, _, _ = run(NO_TREND, 4, ticks)
    with_trend, _, decisions = run(P, 4, ticks)
    # Without a trend each replica comes when the batches are full: 39 > 4 x 9.5, 48 > 5 x 9.5.
    assert [r for r, _ in without] == [4] * 9 + [5] * 9 + [6] * 3
    # The trend needs half its window (150 s) of samples; from then on it plans for the running
    # requests 120 s ahead (+8 here): the 6th replica comes at t=150 instead of t=270.
    assert [r for r, _ in with_trend] == [4] * 9 + [5] + [6] * 10 + [7]
    assert [reason for _, reason in with_trend[8:11]] == ["Steady", "LoadAboveCapacity", "LoadAboveCapacity"]
    assert decisions[10].recommendation == 6  # (40 + 8) / 9.5


def run_with_start(
    policy: ScalingPolicy, replicas: int, ticks: Sequence[Tick], start: float | None
) -> list[int]:
    state, got = ScalerState(), []
    for t, waiting, running, _, _, _ in ticks:
        d, state = compute_scaling_decision(
            ScalingSample(waiting, running), policy, replicas, replicas, state, t, expected_start=start
        )
        got.append(d.replicas)
        replicas = d.replicas
    return got


def test_the_trend_looks_ahead_as_far_as_the_next_replica_takes_to_start() -> None:
    ticks: list[Tick] = [(t, w, r, None, 0, "") for t, w, r in RAMP]
    # Nothing learned: the constant 120 s (+8 running at t=150, as above).
    assert run_with_start(P, 4, ticks, None) == [4] * 9 + [5] + [6] * 10 + [7]
    # A warm node starts a replica in 20 s: plan for +1.3 running, so the 6th replica comes at
    # t=255 (47 + 1.3 > 5 x 9.5), one tick before the batches fill, not two minutes before.
    assert run_with_start(P, 4, ticks, 20.0) == [4] * 9 + [5] * 8 + [6] * 4
    # A cold start of 300 s: +20 running ahead (the cap, half of 40), so 60 / 9.5 -> 7 replicas
    # at t=150 and the 8th at t=255 (47 + 20 > 7 x 9.5).
    assert run_with_start(P, 4, ticks, 300.0) == [4] * 9 + [5] + [7] * 7 + [8] * 4
    # The learned start is bounded: a bogus one (NaN, negative) means "not known".
    assert run_with_start(P, 4, ticks, math.nan) == run_with_start(P, 4, ticks, None)
    assert run_with_start(P, 4, ticks, -5.0) == run_with_start(P, 4, ticks, None)


def test_the_trend_extrapolates_at_most_half_the_running_requests() -> None:
    steep = [(15.0 * i, 0.0, 10.0 + 10 * i, None, 0, "") for i in range(12)]
    _, _, decisions = run(replace(P, max_replicas=100), 1, steep)
    # at t=165, 120 running rising 10 per tick: +80 in 120 s, capped at +60 -> 180 / 9.5
    assert decisions[-1].recommendation == 19


def test_a_ramp_that_has_stopped_is_not_extrapolated() -> None:
    # 20 -> 200 running over the first minute, then flat at 200 for two and a half: a line
    # over the whole five minutes still rises (the fill of conv x5's first minute, which
    # asked for 12 replicas where 8 were needed); its latest half does not.
    fill = [(15.0 * i, 0.0, min(20.0 + 45 * i, 200.0), None, 0, "") for i in range(15)]
    _, _, decisions = run(replace(P, max_replicas=100), 21, fill)
    assert decisions[-1].recommendation == 22  # 200 / 9.5 -> 22: today's batches, no more
    _, _, whole = run(replace(P, max_replicas=100, trend_recent_half=False), 21, fill)
    # the whole window's line: 237.5 now, + 0.64 a second for 120 s -> 315 / 9.5 -> 34
    assert whole[-1].recommendation == 34


PLATEAU: list[Tick] = [(15.0 * i, 1, 40, None, 5, "Steady") for i in range(40)]


def test_a_plateau_changes_nothing() -> None:
    got, state, _ = run(P, 5, PLATEAU)
    assert got == expected(PLATEAU)
    assert state.recommendations == ((585.0, 5),)  # equal recommendations are kept as one entry
    assert state.last_scale_time is None


def test_an_oscillating_queue_scales_up_once_and_holds() -> None:
    # 40 running on 5 replicas; the queue flips between 0 and 40 every tick for 15 minutes.
    ticks: list[Tick] = []
    for i in range(60):
        ticks.append((15.0 * i, 40.0 if i % 2 else 0.0, 40.0, None, 0, ""))
    got, _, decisions = run(P, 5, ticks)
    replicas = [r for r, _ in got]
    assert replicas[:2] == [5, 7]  # (40 + 40) / 12 -> 7 at the first spike
    assert set(replicas[1:]) == {7}
    assert sum(1 for d in decisions if d.direction != "none") == 1


QUEUED_BEFORE = ScalerState(last_overload=-60.0)
"""A service whose queue outran its fleet a minute before the ticks: flap damping applies."""


def test_flapping_between_two_levels_lengthens_the_scale_down_window() -> None:
    ticks: list[Tick] = [(0, 0, 20, None, 3, "Steady"), (15, 0, 45, None, 5, "LoadAboveCapacity")]
    ticks += [(float(t), 0, 20, None, 5, "StabilizingScaleDown") for t in range(30, 315, 15)]
    ticks += [(315, 0, 20, None, 4, "LoadBelowCapacity")]  # the peak at t=15 leaves the window
    ticks += [(330, 0, 45, None, 5, "LoadAboveCapacity")]  # and back up 15 s later: a reversal
    got, state, _ = run(NO_TREND, 3, ticks, QUEUED_BEFORE)
    assert got == expected(ticks)
    assert state.scale_down_window == 600  # the spec's 300 s, doubled ...
    assert state.scale_down_window_until == 330 + 1800  # ... for the next 30 minutes
    # so the next dip must last 600 s before a replica goes
    later: list[Tick] = [(float(t), 0, 20, None, 5, "StabilizingScaleDown") for t in range(345, 930, 15)]
    later += [(930, 0, 20, None, 4, "LoadBelowCapacity")]
    got, state, decisions = run(NO_TREND, 5, later, state)
    assert got == expected(later)
    assert "highest in 600s is 6" in decisions[-2].message
    # another quick reversal doubles it again, up to the 900 s cap
    _, state, _ = run(NO_TREND, 4, [(945, 0, 45, None, 5, "")], state)
    assert state.scale_down_window == 900
    # 30 minutes after the last reversal the spec's window is back
    assert NO_TREND.down_window(state, 945 + 1799) == 900
    assert NO_TREND.down_window(state, 945 + 1800) == 300


def test_a_scale_up_within_ten_minutes_of_a_scale_down_is_a_reversal() -> None:
    # a cold start takes up to five minutes: a replica released and wanted back within ten
    # minutes was barely worth releasing, so the window doubles as for a quick flip
    ticks: list[Tick] = [(0, 0, 45, None, 5, "LoadAboveCapacity")]
    ticks += [(float(t), 0, 30, None, 5, "StabilizingScaleDown") for t in range(15, 300, 15)]
    ticks += [(300, 0, 30, None, 4, "LoadBelowCapacity")]  # 30 running keep 4 (30 / 8.5)
    ticks += [(float(t), 0, 30, None, 4, "Steady") for t in range(315, 870, 15)]
    ticks += [(870, 0, 45, None, 5, "LoadAboveCapacity")]  # 570 s after the scale-down
    got, state, _ = run(NO_TREND, 3, ticks, QUEUED_BEFORE)
    assert got == expected(ticks)
    assert (state.scale_down_window, state.scale_down_window_until) == (600, 870 + 1800)
    # 615 s after the scale-down it is a new level, not a reversal
    ticks[-1] = (915, 0, 45, None, 5, "LoadAboveCapacity")
    _, state, _ = run(NO_TREND, 3, ticks, QUEUED_BEFORE)
    assert state.scale_down_window is None


def test_a_reversal_damps_only_where_the_queue_has_built_up_within_the_hour() -> None:
    # the same reversal as above; the trend asked the replica back before anyone waited
    ticks: list[Tick] = [(0, 0, 45, None, 5, "LoadAboveCapacity")]
    ticks += [(float(t), 0, 30, None, 5, "StabilizingScaleDown") for t in range(15, 300, 15)]
    ticks += [(300, 0, 30, None, 4, "LoadBelowCapacity")]
    ticks += [(float(t), 0, 30, None, 4, "Steady") for t in range(315, 870, 15)]
    ticks += [(870, 0, 45, None, 5, "LoadAboveCapacity")]
    _, never, _ = run(NO_TREND, 3, ticks)
    assert never.scale_down_window is None  # releasing the replica cost no one a wait
    _, long_ago, _ = run(NO_TREND, 3, ticks, ScalerState(last_overload=870.0 - 3601))
    assert long_ago.scale_down_window is None
    # a queue that outran the fleet (more than 2 per replica) in the ticks themselves counts
    queued = [(0, 11, 40, None, 5, "QueueAboveTarget"), *ticks[1:]]
    got, state, _ = run(NO_TREND, 4, queued)
    assert got == expected(queued)
    assert (state.last_overload, state.scale_down_window) == (0, 600)
    # a queue that the replicas already starting were sized for is the start-up's: 10 waiting
    # is above 2 per ready replica (3) but not per replica of the fleet (5)
    starting = [(0, 10, 40, 3, 5, "ReplicasStarting"), *ticks[1:]]
    got, state, _ = run(NO_TREND, 5, starting)
    assert got == expected(starting)
    assert (state.last_overload, state.scale_down_window) == (None, None)


def test_missing_data_holds_never_scales_down_and_keeps_the_state() -> None:
    _, state, _ = run(P, 6, [(0, 0, 10, None, 0, "")])
    for t, waiting, running in [
        (15, None, 10.0),
        (30, 0.0, None),
        (45, math.nan, 3.0),
        (60, 1.0, math.inf),
        (75, -1.0, 2.0),
    ]:
        d, after = compute_scaling_decision(ScalingSample(waiting, running), P, 6, 6, state, t)
        assert (d.replicas, d.reason, d.limited, d.recommendation) == (6, "MetricsUnavailable", False, None)
        assert after is state
    # data is back: the window still holds the 6 replicas it started with (a fresh state holds
    # the current size for one window, as HPA does), and a queue scales up again at once
    d, _ = compute_scaling_decision(ScalingSample(0, 10), P, 6, 6, state, 90)
    assert (d.replicas, d.reason) == (6, "StabilizingScaleDown")
    d, _ = compute_scaling_decision(ScalingSample(200, 50), P, 6, 6, state, 90)
    assert (d.replicas, d.reason, d.limited) == (10, "AtMaxReplicas", True)
    d, _ = compute_scaling_decision(ScalingSample(0, 10), P, 6, 6, state, 301)
    assert (d.replicas, d.reason) == (5, "LoadBelowCapacity")


def test_missing_data_still_applies_min_and_max() -> None:
    bounded = replace(P, min_replicas=2, max_replicas=4)
    d, _ = compute_scaling_decision(ScalingSample(None, None), bounded, 1, 1, ScalerState(), 0)
    assert (d.replicas, d.reason, d.limited) == (2, "AtMinReplicas", True)
    d, _ = compute_scaling_decision(ScalingSample(None, None), bounded, 6, 6, ScalerState(), 0)
    assert (d.replicas, d.reason, d.limited) == (4, "AtMaxReplicas", True)


STARTING: list[Tick] = [
    (0, 20, 20, None, 4, "QueueAboveTarget"),  # (20 + 20) / 12 -> 4
    # 2 of 4 ready: 26 waiting will go to the 2 starting replicas, no more are needed
    (15, 26, 20, 2, 4, "ReplicasStarting"),
    # the queue outgrows them: (20 + 44) / 12 -> 6, within 2 ready + 4
    (30, 44, 20, 2, 6, "QueueAboveTarget"),
    # 9 wanted, but no more than 2 ready + 4 until some of the 4 starting ones are up
    (45, 80, 20, 2, 6, "ReplicasStarting"),
    (60, 60, 40, 4, 8, "QueueAboveTarget"),  # 4 ready: up to 8 of the 9 wanted
    (75, 0, 70, 8, 8, "Steady"),
]


def test_starting_replicas_count_as_incoming_capacity() -> None:
    got, _, _ = run(P, 2, STARTING)
    assert got == expected(STARTING)


CLAMP: list[Tick] = [
    (0, 500, 40, None, 6, "AtMaxReplicas"),  # wants 45
    (15, 500, 60, None, 6, "AtMaxReplicas"),
    (30, 0, 0, None, 6, "StabilizingScaleDown"),  # wants 0, min 2, the window holds 6 anyway
]


def test_min_and_max_clamp_and_say_so() -> None:
    bounded = replace(P, min_replicas=2, max_replicas=6)
    got, _, decisions = run(bounded, 4, CLAMP)
    assert got == expected(CLAMP)
    assert [d.limited for d in decisions] == [True, True, True]
    idle: list[Tick] = [(float(t), 0, 0, None, 0, "") for t in range(0, 1200, 15)]
    got, _, decisions = run(bounded, 3, idle)
    assert got[-1] == (2, "AtMinReplicas")
    assert decisions[-1].limited


def test_a_current_outside_the_bounds_is_corrected() -> None:
    bounded = replace(P, min_replicas=2, max_replicas=6)
    d, _ = compute_scaling_decision(ScalingSample(0, 5), bounded, 9, 9, ScalerState(), 0)
    assert (d.replicas, d.reason, d.limited, d.direction) == (6, "AtMaxReplicas", True, "down")
    d, _ = compute_scaling_decision(ScalingSample(0, 5), bounded, 1, 1, ScalerState(), 0)
    assert (d.replicas, d.reason, d.limited, d.direction) == (2, "AtMinReplicas", True, "up")


ZERO = replace(P, min_replicas=0, scale_to_zero_after_seconds=600)


def test_scale_to_zero_after_the_idle_period_and_back_on_a_gateway_queue() -> None:
    ticks: list[Tick] = [(0, 0, 5, None, 1, "Steady")]
    ticks += [(float(t), 0, 0, None, 1, "Steady") for t in range(15, 600, 15)]
    ticks += [(600, 0, 0, None, 0, "ScaleToZero")]  # 600 s after the last request at t=0
    ticks += [(615, None, None, 0, 0, "MetricsUnavailable")]  # no pods, no metrics: stay at zero
    ticks += [(630, 0, None, 0, 0, "Steady")]  # a gateway reports an empty queue
    ticks += [(645, 3, None, 0, 1, "ScaleFromZero")]  # and then 3 waiting requests
    # the replica starts; no engine reports running requests yet: hold, never down
    ticks += [(660, 3, None, 0, 1, "MetricsUnavailable")]
    ticks += [(675, 0, 2, 1, 1, "Steady")]
    got, _, _ = run(ZERO, 1, ticks)
    assert got == expected(ticks)


def test_without_scale_to_zero_a_min_of_zero_still_keeps_one_replica() -> None:
    keep_one = replace(P, min_replicas=0)
    idle: list[Tick] = [(float(t), 0, 0, None, 0, "") for t in range(0, 3600, 15)]
    got, _, _ = run(keep_one, 2, idle)
    assert {r for r, _ in got[-100:]} == {1}
    d, _ = compute_scaling_decision(ScalingSample(0, 0), keep_one, 0, 0, ScalerState(), 0)
    assert (d.replicas, d.reason, d.limited) == (1, "ScaleFromZero", False)


def test_decisions_are_deterministic_and_pure() -> None:
    a = run(P, 2, BURST)
    b = run(P, 2, BURST)
    assert a[0] == b[0]
    assert a[1] == b[1]


def test_state_round_trips_through_status_json() -> None:
    _, state, _ = run(P, 3, [(float(t), 0, 20 + t / 15, None, 0, "") for t in range(0, 400, 15)])
    _, state, _ = run(P, 3, [(400, 0, 45, None, 0, ""), (415, 0, 10, None, 0, "")], state)
    state = replace(
        state,
        scale_down_window=600.0,
        scale_down_window_until=2000.0,
        last_scale_down=330.0,
        last_overload=45.0,
    )
    raw = json.loads(json.dumps(state.to_status()))
    assert set(raw) == {
        "recommendations",
        "lastActive",
        "lastReplicas",
        "lastScaleTime",
        "lastScaleDown",
        "scaleDownWindowSeconds",
        "scaleDownWindowUntil",
        "lastOverload",
        "runningSamples",
    }
    assert ScalerState.from_status(raw) == state
    assert ScalerState().to_status()["recommendations"] == []
    assert ScalerState.from_status(ScalerState().to_status()) == ScalerState()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "garbage",
        [],
        {},
        {"recommendations": "nope", "lastActive": "yesterday", "runningSamples": {"a": 1}},
        {"recommendations": [1, None, {"time": "x", "replicas": 2}, {"time": 1.0, "replicas": -1}]},
        {"recommendations": [{"time": 1.0, "replicas": True}, {"time": math.inf, "replicas": 2}]},
        {
            "lastScaleTime": math.nan,
            "scaleDownWindowSeconds": -5,
            "runningSamples": [{"time": 1, "running": -2}],
        },
    ],
)
def test_garbage_status_gives_an_empty_state(raw: object) -> None:
    assert ScalerState.from_status(raw) == ScalerState()  # type: ignore[arg-type]


def test_partly_valid_status_keeps_the_valid_entries_in_time_order() -> None:
    raw = {
        "recommendations": [{"time": 30, "replicas": 4}, {"time": "bad"}, {"time": 15.5, "replicas": 3}],
        "lastActive": 12,
        "runningSamples": [
            {"time": 15, "running": 7, "waiting": 2},
            {"time": 0, "running": 3.5},  # written before samples carried the queue
            {"time": 5, "running": 1, "waiting": -1},
        ],
    }
    state = ScalerState.from_status(raw)
    assert state.recommendations == ((15.5, 3), (30.0, 4))
    assert state.last_active == 12.0
    assert state.running_samples == ((0.0, 3.5, 0.0), (5.0, 1.0, 0.0), (15.0, 7.0, 2.0))


def test_direction_without_a_current_is_none() -> None:
    assert ScalingDecision(3, "Steady", "", False).direction == "none"
    assert ScalingDecision(3, "Steady", "", False, current_replicas=2).direction == "up"
    assert ScalingDecision(1, "Steady", "", False, current_replicas=2).direction == "down"


def test_a_scale_up_window_goes_to_the_lowest_recommendation_in_it() -> None:
    slow_up = replace(NO_TREND, scale_up_stabilization_seconds=30)
    ticks: list[Tick] = [
        (0, 0, 20, None, 3, "Steady"),
        (15, 0, 45, None, 3, "StabilizingScaleUp"),  # wants 5; t=0 recommended 3
        (30, 0, 45, None, 5, "LoadAboveCapacity"),  # the window (0, 30] now only holds 6 and 5
    ]
    got, _, _ = run(slow_up, 3, ticks)
    assert got == expected(ticks)


def test_a_fleet_the_gateway_woke_is_not_put_back_to_sleep_before_its_load_shows() -> None:
    """The gateway raises replicas 0 -> 1 for a held request; the next tick may come before
    Prometheus has scraped the gateway's queue, and must not read "idle" into that."""
    ticks: list[Tick] = [(0, 0, 5, None, 1, "Steady")]
    ticks += [(float(t), 0, 0, None, 1, "Steady") for t in range(15, 600, 15)]
    ticks += [(600, 0, 0, None, 0, "ScaleToZero")]
    _, state, _ = run(ZERO, 1, ticks)
    for t in range(615, 900, 15):
        d, state = compute_scaling_decision(ScalingSample(0, 0), ZERO, 0, 0, state, t)
        assert d.replicas == 0
    # the gateway woke it between ticks; its queue and in-flight request are not scraped yet
    d, state = compute_scaling_decision(ScalingSample(0, 0), ZERO, 1, 0, state, 905)
    assert (d.replicas, d.reason) == (1, "Steady")
    # the wake starts the idle period: with no load at all it sleeps again 600 s later, not sooner
    times = range(920, 1520, 15)
    for t in times:
        d, state = compute_scaling_decision(ScalingSample(0, 0), ZERO, 1, 1, state, t)
        assert (d.replicas, t) == (0 if t >= 1505 else 1, t)
    assert d.reason == "ScaleToZero"


def test_the_replicas_the_last_tick_left_survive_an_operator_restart() -> None:
    _, state, _ = run(ZERO, 1, [(0, 0, 0, None, 0, "")])
    raw = json.loads(json.dumps(state.to_status()))
    assert ScalerState.from_status(raw).last_replicas == state.last_replicas
    assert ScalerState.from_status({"lastReplicas": True}).last_replicas is None


def test_a_kv_cache_filling_with_the_running_requests_is_sized_as_it_fills() -> None:
    # Long decodes: the running requests rise by one per tick and each holds 4% of the 4 ready
    # replicas' KV cache, with slots free (10 per replica); what is asked for is still starting.
    ticks = [(15.0 * k, 10.0 + k) for k in range(13)]  # t = 0..180, running 10..22, KV 40-88%

    messages: list[str] = []

    def replicas(policy: ScalingPolicy) -> list[int]:
        state, current, got = ScalerState(), 4, []
        for t, running in ticks:
            sample = ScalingSample(0, running, 2.0, kv_cache_usage=0.04 * running)
            d, state = compute_scaling_decision(sample, policy, current, 4, state, t)
            got.append(current := d.replicas)
            messages.append(d.message)
        return got

    # From t = 60 (half of `kv_trend_window_seconds`) the KV cache is planned with the running
    # requests 120 s ahead, 8 more at one per 15 s, at most half again: at t = 90,
    # 4 x 0.64 x 24 / 16 / 0.9 -> 5; at t = 165, 4 x 0.84 x 29 / 21 / 0.9 -> 6
    assert replicas(P) == [4] * 6 + [5] * 5 + [6, 6]
    assert messages[6] == (
        "queue 0, running 16, KV cache 64% on 4/4 replicas ready (rising: sized for KV cache 96%); "
        "recommend 5, scaling up to 5"
    )
    assert "(rising: sized for running 29 and KV cache 116%); recommend 6" in messages[11]
    # With the 5-minute trend alone, from t = 150 (half its window)
    assert replicas(replace(P, kv_trend_window_seconds=0)) == [4] * 10 + [5, 6, 6]
    # Sized to the KV cache as it is, the fleet grows only once the cache is past 90% (t = 180:
    # 4 x 0.88 / 0.9 < 4): a start too late
    assert replicas(replace(NO_TREND, kv_trend_window_seconds=0)) == [4] * 13


def test_once_the_trend_has_its_history_the_kv_cache_follows_it_alone() -> None:
    # Running 10 for 150 s, a ramp to 20, a plateau, and a ramp again; each request holds 3.3%
    # of one of 4 replicas' KV cache (76% at t = 435), spread over the ready replicas.
    running = [10] * 11 + list(range(11, 21)) + [20] * 6 + [21, 22, 23, 24]

    def replicas(policy: ScalingPolicy) -> list[int]:
        state, current, got = ScalerState(), 4, []
        for k, r in enumerate(running):
            sample = ScalingSample(0, r, 2.0, kv_cache_usage=0.033 * 4 * r / current)
            d, state = compute_scaling_decision(sample, policy, current, current, state, 15.0 * k)
            got.append(current := d.replicas)
        return got

    # At t = 435 (23 running, KV 76%) the 5-minute trend plans for 24 and a KV cache at 80%, as
    # with no short window at all. Kept after the start (c2866f0), the short window's recent
    # half, 4 samples of the resumed ramp, sized it at 94% (28.6 running) and added a 5th
    # replica 45 s into it: the kind of wiggle that cost Mooncake GPU-hours for no SLO.
    assert replicas(P) == [4] * 31
    assert replicas(P) == replicas(replace(P, kv_trend_window_seconds=0))
