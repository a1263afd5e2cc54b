"""Each stage of the scaling decision on its own: observe, recommend, stabilize, limit rate,
explain, and the state remembered for the next tick. Whole tick sequences are in test_scaling.py.

With the policy `P` a replica runs 10 requests (scale up above 9.5 running per replica, keep
replicas while the window saw more than 8.5) and may have 2 waiting. Every tick is at `NOW`.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.autoscale import build_scaling_policy
from inferfleet.planning.scaling import DEFAULT_TUNING, Reason, ScalerState, ScalingPolicy, ScalingTuning
from inferfleet.planning.scaling_model import ScalingDecision, ScalingSample
from inferfleet.planning.scaling_stages import (
    Fleet,
    Observation,
    Recommendation,
    Stabilized,
    Verdict,
    explain,
    hold_without_metrics,
    limit_rate,
    observe,
    recommend,
    remember,
    stabilize,
)

P = ScalingPolicy(min_replicas=1, max_replicas=10, target_queue_depth=2, max_concurrent_requests=10)
ZERO = replace(P, min_replicas=0, scale_to_zero_after_seconds=600)
MIN_ZERO = replace(P, min_replicas=0)
BOUNDED = replace(P, min_replicas=2, max_replicas=6)
SLOW_UP = replace(P, scale_up_stabilization_seconds=30)
NOW = 1000.0
FRESH = ScalerState()


def fleet(current: int, ready: int | None = None, policy: ScalingPolicy = P) -> Fleet:
    return Fleet.of(policy, current, current if ready is None else ready)


def obs(
    waiting: float,
    running: float,
    current: int,
    ready: int | None = None,
    *,
    policy: ScalingPolicy = P,
    idle_for: float = 0.0,
    flow: tuple[float, float] | None = None,
) -> Observation:
    """An observation as `observe` makes it, without a trend."""
    f = fleet(current, ready, policy)
    return Observation(
        fleet=f,
        now=NOW,
        waiting=waiting,
        running=running,
        planned_running=running,
        flow=flow,
        last_active=NOW - idle_for,
        samples=((NOW, running, waiting),),
        queue_high=waiting > policy.target_queue_depth * max(f.ready, 1),
        queue_outran=waiting > policy.target_queue_depth * max(f.current, 1),
    )


def rec(
    raw: int,
    replicas: int | None = None,
    *,
    limited: bool = False,
    may_be_zero: bool = False,
    idle_long: bool = False,
) -> Recommendation:
    keep = raw if replicas is None else replicas
    return Recommendation(raw, keep, keep, limited, may_be_zero, idle_long)


def win(target: int, up: int | None = None, down: int | None = None, window: float = 300.0) -> Stabilized:
    return Stabilized(target, target if up is None else up, target if down is None else down, window, ())


# ------------------------------------------------------------------------------------ observe


def test_fleet_normalizes_counts_and_bounds() -> None:
    assert Fleet.of(P, -1, 5) == Fleet(current=0, ready=0, lo=1, hi=10)
    assert Fleet.of(P, 4, 7) == Fleet(current=4, ready=4, lo=1, hi=10)
    assert Fleet.of(replace(P, min_replicas=5, max_replicas=3), 4, 2) == Fleet(4, 2, 3, 3)


RISING = ScalerState(
    last_active=700.0,
    running_samples=((760.0, 10.0, 0.0), (820.0, 20.0, 0.0), (880.0, 30.0, 0.0), (940.0, 40.0, 0.0)),
)

# (sample, current, ready, state) -> (waiting, running, planned, flow, last_active, samples, queue_high)
OBSERVE_CASES: dict[str, tuple[ScalingSample, int, int, ScalerState, tuple[Any, ...]]] = {
    "fresh": (ScalingSample(4, 20), 3, 3, FRESH, (4, 20, 20, None, NOW, ((NOW, 20, 4),), False)),
    "queue above target": (ScalingSample(7, 20), 3, 3, FRESH, (7, 20, 20, None, NOW, ((NOW, 20, 7),), True)),
    "only ready replicas take the queue": (
        ScalingSample(3, 20),
        3,
        1,
        FRESH,
        (3, 20, 20, None, NOW, ((NOW, 20, 3),), True),
    ),
    "a gateway's queue at zero replicas": (
        ScalingSample(3, None),
        0,
        0,
        FRESH,
        (3, 0, 0, None, NOW, ((NOW, 0, 3),), True),
    ),
    "idle keeps the last active time": (
        ScalingSample(0, 0),
        2,
        2,
        ScalerState(last_active=400.0),
        (0, 0, 0, None, 400.0, ((NOW, 0, 0),), False),
    ),
    "the first observation counts as active": (
        ScalingSample(0, 0),
        2,
        2,
        FRESH,
        (0, 0, 0, None, NOW, ((NOW, 0, 0),), False),
    ),
    "samples older than the trend window are dropped": (
        ScalingSample(0, 20),
        3,
        3,
        ScalerState(running_samples=((600.0, 5.0, 0.0), (900.0, 10.0, 0.0))),
        (0, 20, 20, None, NOW, ((900, 10, 0), (NOW, 20, 0)), False),
    ),
    "flow: service time is running / completions": (
        ScalingSample(0, 20, 4.0),
        3,
        3,
        FRESH,
        (0, 20, 20, (4.0, 5.0), NOW, ((NOW, 20, 0),), False),
    ),
    "flow: arrivals add the load's growth": (
        ScalingSample(0, 20, 4.0),
        3,
        3,
        ScalerState(running_samples=((970.0, 10.0, 0.0),)),
        (0, 20, 20, (4.0 + 10 / 30, 15 / 4), NOW, ((970, 10, 0), (NOW, 20, 0)), False),
    ),
    "a rising trend plans for more running requests": (
        ScalingSample(0, 50),
        6,
        6,
        RISING,
        (0, 50, 70, None, NOW, (*RISING.running_samples, (NOW, 50, 0)), False),
    ),
}


@pytest.mark.parametrize("case", OBSERVE_CASES)
def test_observe(case: str) -> None:
    sample, current, ready, state, expected = OBSERVE_CASES[case]
    o = observe(sample, P, Fleet.of(P, current, ready), state, NOW)
    assert o is not None
    waiting, running, planned, flow, last_active, samples, queue_high = expected
    assert (o.waiting, o.running, o.last_active, o.samples, o.queue_high) == (
        waiting,
        running,
        last_active,
        samples,
        queue_high,
    )
    assert o.planned_running == pytest.approx(planned)
    assert o.flow == (None if flow is None else pytest.approx(flow))


@pytest.mark.parametrize(
    ("waiting", "current", "ready", "high", "outran"),
    [
        (6, 3, 3, False, False),  # target_queue_depth 2 on 3 replicas: 6 is on target
        (7, 3, 3, True, True),
        (3, 3, 1, True, False),  # above target on the 1 ready, not on the 3 of the fleet
        (7, 3, 1, True, True),
        (3, 0, 0, True, True),  # a gateway's queue at zero replicas counts per one replica
    ],
)
def test_observe_compares_the_queue_with_the_ready_replicas_and_the_whole_fleet(
    waiting: float, current: int, ready: int, high: bool, outran: bool
) -> None:
    sample = ScalingSample(waiting, None if current == 0 else 20)
    o = observe(sample, P, Fleet.of(P, current, ready), FRESH, NOW)
    assert o is not None
    assert (o.queue_high, o.queue_outran) == (high, outran)


@pytest.mark.parametrize(
    "sample",
    [
        ScalingSample(None, 20),
        ScalingSample(4, None),
        ScalingSample(math.nan, 20),
        ScalingSample(4, math.inf),
        ScalingSample(-1, 20),
    ],
)
def test_observe_without_queue_metrics_is_none(sample: ScalingSample) -> None:
    assert observe(sample, P, fleet(3), FRESH, NOW) is None


@pytest.mark.parametrize(
    ("current", "ready", "expected"),
    [
        (1, 1, Verdict(2, Reason.AT_MIN_REPLICAS, "queue metrics unavailable; raising to min 2", True)),
        (8, 8, Verdict(6, Reason.AT_MAX_REPLICAS, "queue metrics unavailable; lowering to max 6", True)),
        (
            3,
            2,
            Verdict(
                3,
                Reason.METRICS_UNAVAILABLE,
                "queue metrics unavailable; holding 3 replicas (2/3 replicas ready (1 starting)), "
                "no scale-down without data",
                False,
            ),
        ),
    ],
)
def test_hold_without_metrics_stays_inside_the_bounds(current: int, ready: int, expected: Verdict) -> None:
    assert hold_without_metrics(fleet(current, ready, BOUNDED)) == expected


# ---------------------------------------------------------------------------------- recommend

# (observation, policy) -> (raw, replicas, keep, limited, may_be_zero, idle_long)
RECOMMEND_CASES: dict[str, tuple[Observation, ScalingPolicy, tuple[int, int, int, bool, bool, bool]]] = {
    "running at 95 % per replica": (obs(0, 20, 3), P, (3, 3, 3, False, False, False)),
    "keep more than the scale-up needs": (obs(0, 90, 9), P, (10, 10, 10, False, False, False)),
    "keep at the lower utilization": (obs(0, 75, 9), P, (8, 8, 9, False, False, False)),
    "a queue without rate counts as load": (obs(106, 20, 3), P, (11, 10, 10, True, False, False)),
    "a queue with a rate is service time": (
        obs(106, 20, 3, flow=(4.0, 5.0)),
        P,
        (3, 3, 3, False, False, False),
    ),
    "no load keeps min": (obs(0, 0, 3), P, (0, 1, 1, True, False, False)),
    "min 0 without scale to zero keeps one": (
        obs(0, 0, 3, policy=MIN_ZERO),
        MIN_ZERO,
        (0, 1, 1, False, False, False),
    ),
    "zero once idle long enough": (
        obs(0, 0, 3, policy=ZERO, idle_for=600),
        ZERO,
        (0, 0, 0, False, True, True),
    ),
    "not yet idle long enough": (
        obs(0, 0, 3, policy=ZERO, idle_for=599),
        ZERO,
        (0, 1, 1, False, True, False),
    ),
}


@pytest.mark.parametrize("case", RECOMMEND_CASES)
def test_recommend(case: str) -> None:
    o, policy, expected = RECOMMEND_CASES[case]
    r = recommend(o, policy)
    assert (r.raw, r.replicas, r.keep, r.limited, r.may_be_zero, r.idle_long) == expected


# ---------------------------------------------------------------------------------- stabilize

DAMPED = ScalerState(recommendations=((500.0, 9),), scale_down_window=600.0, scale_down_window_until=2000.0)

# (current, recommendation (replicas, keep), policy, state) -> Stabilized
STABILIZE_CASES: dict[str, tuple[int, tuple[int, int], ScalingPolicy, ScalerState, Stabilized]] = {
    "a fresh state holds the current size": (
        5,
        (3, 3),
        P,
        FRESH,
        Stabilized(5, 3, 5, 300, ((NOW, 5), (NOW, 3))),
    ),
    "expired recommendations are dropped": (
        6,
        (3, 3),
        P,
        ScalerState(recommendations=((600.0, 8), (800.0, 4))),
        Stabilized(4, 3, 4, 300, ((800, 4), (NOW, 3))),
    ),
    "a run of equal values keeps its newest": (4, (3, 4), P, FRESH, Stabilized(4, 3, 4, 300, ((NOW, 4),))),
    "the up window holds a scale-up": (
        3,
        (6, 5),
        SLOW_UP,
        ScalerState(recommendations=((980.0, 3),)),
        Stabilized(3, 3, 6, 300, ((980, 3), (NOW, 6))),
    ),
    "after the up window it scales up": (
        3,
        (6, 5),
        SLOW_UP,
        ScalerState(recommendations=((960.0, 3),)),
        Stabilized(6, 6, 6, 300, ((960, 3), (NOW, 6))),
    ),
    "a damped down window keeps more": (9, (4, 4), P, DAMPED, Stabilized(9, 4, 9, 600, ((500, 9), (NOW, 4)))),
    "after the damping the spec's window": (
        9,
        (4, 4),
        P,
        replace(DAMPED, scale_down_window_until=900.0),
        Stabilized(4, 4, 4, 300, ((NOW, 4),)),
    ),
}


@pytest.mark.parametrize("case", STABILIZE_CASES)
def test_stabilize(case: str) -> None:
    current, (replicas, keep), policy, state, expected = STABILIZE_CASES[case]
    r = Recommendation(replicas, replicas, keep, False, False, False)
    assert stabilize(obs(0, 0, current), r, policy, state) == expected


# --------------------------------------------------------------------------------- limit rate

NUMBERS_2 = "queue 0, running 85 on 2/2 replicas ready"
NUMBERS_10 = "queue 0, running 20 on 10/10 replicas ready"
LAST_DOWN_15S_AGO = ScalerState(last_scale_down=NOW - 15)

LIMIT_CASES: dict[
    str, tuple[Observation, Recommendation, Stabilized, ScalingPolicy, ScalerState, Verdict | None]
] = {
    "stays at zero without load": (
        obs(0, 0, 0, policy=ZERO),
        rec(0, may_be_zero=True, idle_long=True),
        win(0),
        ZERO,
        FRESH,
        Verdict(
            0,
            Reason.STEADY,
            "no load; staying at zero replicas (queue 0, running 0 on 0/0 replicas ready)",
            False,
        ),
    ),
    "a queue scales from zero": (
        obs(3, 0, 0, policy=ZERO),
        rec(1, may_be_zero=True),
        win(1),
        ZERO,
        FRESH,
        Verdict(
            1,
            Reason.SCALE_FROM_ZERO,
            "queue 3, running 0 on 0/0 replicas ready; scaling from zero to 1",
            False,
        ),
    ),
    "from zero to min": (
        obs(0, 0, 0, policy=BOUNDED),
        rec(0, 2, limited=True),
        win(2),
        BOUNDED,
        FRESH,
        Verdict(
            2,
            Reason.AT_MIN_REPLICAS,
            "queue 0, running 0 on 0/0 replicas ready; scaling from zero to 2",
            True,
        ),
    ),
    "to zero once idle": (
        obs(0, 0, 2, policy=ZERO, idle_for=600),
        rec(0, may_be_zero=True, idle_long=True),
        win(2),
        ZERO,
        FRESH,
        Verdict(0, Reason.SCALE_TO_ZERO, "no load for 600s (>= 600s); scaling to zero", False),
    ),
    "below min": (
        obs(0, 10, 1, policy=BOUNDED),
        rec(2),
        win(2),
        BOUNDED,
        FRESH,
        Verdict(
            2, Reason.AT_MIN_REPLICAS, "queue 0, running 10 on 1/1 replicas ready; raising to min 2", True
        ),
    ),
    "above max": (
        obs(0, 10, 8, policy=BOUNDED),
        rec(2),
        win(8),
        BOUNDED,
        FRESH,
        Verdict(
            6, Reason.AT_MAX_REPLICAS, "queue 0, running 10 on 8/8 replicas ready; lowering to max 6", True
        ),
    ),
    "up by at most max(4, ready)": (
        obs(0, 85, 2),
        rec(9),
        win(9),
        P,
        FRESH,
        Verdict(6, Reason.LOAD_ABOVE_CAPACITY, f"{NUMBERS_2}; recommend 9, scaling up to 6", False),
    ),
    "up for a queue": (
        obs(30, 20, 2),
        rec(9),
        win(9),
        P,
        FRESH,
        Verdict(
            6,
            Reason.QUEUE_ABOVE_TARGET,
            "queue 30, running 20 on 2/2 replicas ready; recommend 9, scaling up to 6",
            False,
        ),
    ),
    "no more than max(4, ready) on top of the ready ones": (
        obs(30, 20, 6, 2),
        rec(9),
        win(9),
        P,
        FRESH,
        Verdict(
            6,
            Reason.REPLICAS_STARTING,
            "queue 30, running 20 on 2/6 replicas ready (4 starting); recommend 9, "
            "waiting for 4 starting replicas before requesting more",
            False,
        ),
    ),
    "up to max": (
        obs(0, 200, 6),
        rec(22, 10, limited=True),
        win(10),
        P,
        FRESH,
        Verdict(
            10,
            Reason.AT_MAX_REPLICAS,
            "queue 0, running 200 on 6/6 replicas ready; recommend 22, scaling up to 10 (max 10)",
            True,
        ),
    ),
    "down one step": (
        obs(0, 20, 10),
        rec(3),
        win(3),
        P,
        FRESH,
        Verdict(
            9,
            Reason.LOAD_BELOW_CAPACITY,
            f"{NUMBERS_10}; recommend 3, highest in 300s is 3; scaling down to 9",
            False,
        ),
    ),
    "down a tenth of a large fleet": (
        obs(0, 20, 30, policy=replace(P, max_replicas=40)),
        rec(3),
        win(3),
        replace(P, max_replicas=40),
        FRESH,
        Verdict(
            27,
            Reason.LOAD_BELOW_CAPACITY,
            "queue 0, running 20 on 30/30 replicas ready; recommend 3, highest in 300s is 3; "
            "scaling down to 27",
            False,
        ),
    ),
    "down paced": (
        obs(0, 20, 10),
        rec(3),
        win(3),
        P,
        LAST_DOWN_15S_AGO,
        Verdict(
            10,
            Reason.STABILIZING_SCALE_DOWN,
            f"{NUMBERS_10}; recommend 3, highest in 300s is 3; pacing: last scale-down 15s ago",
            False,
        ),
    ),
    "no scale-down with a queue": (
        obs(30, 0, 10),
        rec(3),
        win(3),
        P,
        FRESH,
        Verdict(
            10,
            Reason.QUEUE_ABOVE_TARGET,
            "queue 30, running 0 on 10/10 replicas ready; recommend 3, "
            "not scaling down while the queue is above target",
            False,
        ),
    ),
    "no scale-down with a queue while replicas start": (
        obs(30, 0, 10, 8),
        rec(3),
        win(3),
        P,
        FRESH,
        Verdict(
            10,
            Reason.REPLICAS_STARTING,
            "queue 30, running 0 on 8/10 replicas ready (2 starting); recommend 3, "
            "not scaling down while the queue is above target",
            False,
        ),
    ),
    "down to min": (
        obs(0, 0, 2),
        rec(0, 1, limited=True),
        win(1),
        P,
        FRESH,
        Verdict(
            1,
            Reason.AT_MIN_REPLICAS,
            "queue 0, running 0 on 2/2 replicas ready; recommend 0, highest in 300s is 1; scaling down to 1",
            True,
        ),
    ),
    "nothing to limit": (obs(0, 20, 3), rec(3), win(3), P, FRESH, None),
}


@pytest.mark.parametrize("case", LIMIT_CASES)
def test_limit_rate(case: str) -> None:
    o, r, w, policy, state, expected = LIMIT_CASES[case]
    assert limit_rate(o, r, w, policy, state) == expected


# ------------------------------------------------------------------------------------ explain


def test_explain_takes_the_rate_limiters_verdict() -> None:
    limit = Verdict(6, Reason.LOAD_ABOVE_CAPACITY, "scaling up", False)
    assert explain(obs(0, 85, 2), rec(9), win(9), P, limit) == ScalingDecision(
        6, Reason.LOAD_ABOVE_CAPACITY, "scaling up", False, current_replicas=2, recommendation=9
    )


EXPLAIN_CASES: dict[str, tuple[Observation, Recommendation, Stabilized, ScalingPolicy, Verdict]] = {
    "starting replicas will take the queue": (
        obs(10, 20, 4, 2),
        rec(4),
        win(4),
        P,
        Verdict(
            4,
            Reason.REPLICAS_STARTING,
            "queue 10, running 20 on 2/4 replicas ready (2 starting); recommend 4: "
            "the 2 starting replicas will take the queue",
            False,
        ),
    ),
    "the down window holds": (
        obs(0, 20, 5),
        rec(3),
        win(5, 3, 5),
        P,
        Verdict(
            5,
            Reason.STABILIZING_SCALE_DOWN,
            "queue 0, running 20 on 5/5 replicas ready; recommend 3, holding 5: highest in 300s is 5",
            False,
        ),
    ),
    "the up window holds": (
        obs(0, 55, 3),
        rec(6),
        win(3, 3, 6),
        SLOW_UP,
        Verdict(
            3,
            Reason.STABILIZING_SCALE_UP,
            "queue 0, running 55 on 3/3 replicas ready; recommend 6, holding 3: lowest in 30s is 3",
            False,
        ),
    ),
    "held at max": (
        obs(0, 200, 10),
        rec(22, 10, limited=True),
        win(10),
        P,
        Verdict(
            10,
            Reason.AT_MAX_REPLICAS,
            "queue 0, running 200 on 10/10 replicas ready; recommend 22, limited to 10",
            True,
        ),
    ),
    "held at min": (
        obs(0, 0, 1),
        rec(0, 1, limited=True),
        win(1),
        P,
        Verdict(
            1,
            Reason.AT_MIN_REPLICAS,
            "queue 0, running 0 on 1/1 replicas ready; recommend 0, limited to 1",
            True,
        ),
    ),
    "steady": (
        obs(0, 20.5, 3),
        rec(3),
        win(3),
        P,
        Verdict(
            3, Reason.STEADY, "queue 0, running 20.5 on 3/3 replicas ready; 3 replicas fit the load", False
        ),
    ),
}


@pytest.mark.parametrize("case", EXPLAIN_CASES)
def test_explain_why_the_fleet_keeps_its_size(case: str) -> None:
    o, r, w, policy, expected = EXPLAIN_CASES[case]
    decision = explain(o, r, w, policy, None)
    assert decision == ScalingDecision(*expected, current_replicas=o.fleet.current, recommendation=r.raw)
    assert decision.direction == "none"


def test_reasons_serialise_as_plain_strings() -> None:
    decision = explain(obs(0, 20, 3), rec(3), win(3), P, None)
    assert json.dumps({"reason": decision.reason}) == '{"reason": "Steady"}'


# ----------------------------------------------------------------------------------- remember

SEEN = ScalerState(recommendations=((NOW, 3),), last_active=NOW, running_samples=((NOW, 20.0, 0.0),))

QUEUED = ScalerState(last_scale_down=400.0, last_overload=NOW - 3600)
"""A scale-down at t = 400 in a service whose queue was above target an hour ago."""

# (replicas decided from 5, policy, state, down window) -> the next state
REMEMBER_CASES: dict[str, tuple[int, ScalingPolicy, ScalerState, float, ScalerState]] = {
    "a hold records the windows only": (5, P, FRESH, 300, SEEN),
    "a scale-down": (4, P, FRESH, 300, replace(SEEN, last_scale_time=NOW, last_scale_down=NOW)),
    "a scale-up soon after a scale-down doubles the down window": (
        6,
        P,
        QUEUED,
        300,
        replace(
            SEEN,
            last_scale_time=NOW,
            last_scale_down=400.0,
            last_overload=NOW - 3600,
            scale_down_window=600,
            scale_down_window_until=NOW + 1800,
        ),
    ),
    "up to the longest damped window": (
        6,
        P,
        QUEUED,
        600,
        replace(
            SEEN,
            last_scale_time=NOW,
            last_scale_down=400.0,
            last_overload=NOW - 3600,
            scale_down_window=900,
            scale_down_window_until=NOW + 1800,
        ),
    ),
    "a scale-up long after a scale-down": (
        6,
        P,
        replace(QUEUED, last_scale_down=399.0),
        300,
        replace(SEEN, last_scale_time=NOW, last_scale_down=399.0, last_overload=NOW - 3600),
    ),
    "no damping with factor 1": (
        6,
        replace(P, flap_damping_factor=1),
        QUEUED,
        300,
        replace(SEEN, last_scale_time=NOW, last_scale_down=400.0, last_overload=NOW - 3600),
    ),
    "no damping where the queue never built up": (
        6,
        P,
        ScalerState(last_scale_down=400.0),
        300,
        replace(SEEN, last_scale_time=NOW, last_scale_down=400.0),
    ),
    "no damping where it last built up more than an hour ago": (
        6,
        P,
        replace(QUEUED, last_overload=NOW - 3601),
        300,
        replace(SEEN, last_scale_time=NOW, last_scale_down=400.0, last_overload=NOW - 3601),
    ),
}


@pytest.mark.parametrize("case", REMEMBER_CASES)
def test_remember(case: str) -> None:
    replicas, policy, state, window, expected = REMEMBER_CASES[case]
    stabilized = Stabilized(3, 3, 3, window, ((NOW, 3),))
    got = remember(obs(0, 20, 5), stabilized, replicas, policy, state)
    assert got == replace(expected, last_replicas=replicas)  # what the tick left: a wake shows next tick


@pytest.mark.parametrize(
    ("waiting", "current", "ready", "remembered"),
    [
        (10, 5, 5, None),  # target_queue_depth 2 on 5 replicas: 10 waiting is on target
        (10.5, 5, 5, NOW),
        (16, 8, 5, None),  # above target on the 5 ready, but the 3 starting were sized for it
        (16.5, 8, 5, NOW),  # it outran the whole fleet, the replicas on their way included
    ],
)
def test_remember_when_the_queue_outran_the_fleet(
    waiting: float, current: int, ready: int, remembered: float | None
) -> None:
    stabilized = Stabilized(current, current, current, 300, ((NOW, current),))
    got = remember(obs(waiting, 50, current, ready), stabilized, current, P, FRESH)
    assert got.last_overload == remembered


# ------------------------------------------------------------------------------------- policy


def test_tuning_constants_can_be_set_one_by_one() -> None:
    no_trend = replace(P, trend_window_seconds=0)
    assert no_trend.tuning == ScalingTuning(trend_window_seconds=0)
    assert (no_trend.min_replicas, no_trend.max_replicas, no_trend.target_queue_depth) == (1, 10, 2)
    assert replace(no_trend, max_replicas=3).tuning == ScalingTuning(trend_window_seconds=0)
    assert P.tuning is DEFAULT_TUNING


def test_an_unknown_tuning_constant_is_an_error() -> None:
    with pytest.raises(TypeError, match="trend_window"):
        replace(P, trend_window=0)


SPEC: dict[str, Any] = {
    "model": {"name": "m", "source": "hf://org/m", "parametersBillions": 8},
    "engine": {"kind": "vllm"},
    "accelerator": {"product": "NVIDIA-L4"},
}


@pytest.mark.parametrize(("window", "interval"), [(300, 60), (30, 30)])
def test_a_short_down_window_paces_scale_downs_by_itself(window: int, interval: float) -> None:
    spec = InferenceServiceSpec.model_validate(
        {**SPEC, "scaling": {"minReplicas": 2, "maxReplicas": 5, "scaleDownStabilizationSeconds": window}}
    )
    policy = build_scaling_policy(spec)
    assert policy is not None
    assert (policy.min_replicas, policy.max_replicas, policy.scale_down_stabilization_seconds) == (
        2,
        5,
        window,
    )
    assert policy.tuning == replace(DEFAULT_TUNING, scale_down_interval_seconds=interval)
