"""Learning a service's start-to-Ready durations, warm and cold, from its pods (planning/startup.py)."""

from __future__ import annotations

import json

import pytest

from inferfleet.planning.startup import (
    RECENT,
    NodeWarmth,
    PodStart,
    StartupStats,
    classify_start,
    compute_expected_start,
    compute_node_warmth,
    compute_startup_stats,
    compute_warm_room,
)


def pod(name: str, node: str, created: float, ready: float | None) -> PodStart:
    return PodStart(name, node, created, ready)


def test_without_a_cache_every_start_is_cold_and_the_estimate_is_the_median():
    pods = [
        pod("a", "n1", 0, 100),
        pod("b", "n2", 10, 130),
        pod("c", "n3", 20, 1000),
        pod("d", "n4", 30, None),
    ]
    stats = compute_startup_stats(StartupStats(), pods, cache=False, warmth=None)
    assert stats.cold == (100, 120, 980)
    assert stats.cold_seconds == 120  # the stuck pod (980 s) does not move the median
    assert stats.warm_seconds is None
    assert stats.samples == 3
    assert compute_expected_start(stats, warm_room=True) == 120  # nothing warm learned: cold


def test_warm_is_a_pod_created_after_its_node_was_seen_holding_the_weights():
    warmth = compute_node_warmth(None, ["n1"], now=50)  # first look: n1 Present since before 50
    warmth = compute_node_warmth(warmth, ["n1", "n2"], now=200)  # n2 turned Present by 200
    pods = [
        pod("before-first-look", "n1", 40, 60),  # unknown: n1 may have been warm or not
        pod("warm-n1", "n1", 100, 120),
        pod("cold-n2", "n2", 100, 190),  # created before n2 was Present: it waited for the fetch
        pod("warm-n2", "n2", 210, 240),
        pod("cold-n3", "n3", 100, 300),  # n3 holds no weights
    ]
    assert [classify_start(p, True, warmth) for p in pods] == [None, "warm", "cold", "warm", "cold"]
    stats = compute_startup_stats(StartupStats(), pods, cache=True, warmth=warmth)
    assert (stats.warm, stats.cold, stats.samples) == ((20, 30), (90, 200), 4)
    assert compute_expected_start(stats, warm_room=True) == 25
    assert compute_expected_start(stats, warm_room=False) == 145


def test_a_node_that_stops_holding_the_weights_is_warm_again_only_from_its_next_sighting():
    warmth = compute_node_warmth(None, ["n1"], now=0)
    warmth = compute_node_warmth(warmth, [], now=100)  # evicted
    warmth = compute_node_warmth(warmth, ["n1"], now=300)
    assert warmth == NodeWarmth({"n1": 300}, 0)


def test_each_pod_counts_once_across_ticks_even_when_two_share_a_ready_second():
    first = compute_startup_stats(StartupStats(), [pod("a", "n", 0, 100)], False, None)
    again = compute_startup_stats(first, [pod("a", "n", 0, 100), pod("b", "n", 50, 100)], False, None)
    assert (again.cold, again.samples, again.learned_until, again.counted_at_last) == (
        (100, 50),
        2,
        100,
        ("a", "b"),
    )
    assert compute_startup_stats(again, [pod("a", "n", 0, 100), pod("b", "n", 50, 100)], False, None) is again


def test_only_the_recent_starts_are_kept():
    pods = [pod(f"p{i}", "n", 0, 10 + i) for i in range(RECENT + 5)]
    stats = compute_startup_stats(StartupStats(), pods, False, None)
    assert stats.cold == tuple(float(10 + i) for i in range(5, RECENT + 5))
    assert stats.samples == RECENT + 5


@pytest.mark.parametrize(
    ("present", "serving", "room"),
    [
        (["n1", "n2"], ["n1"], True),  # a prefetched node runs none of the service's pods
        (["n1"], ["n1", "n2"], False),
        ([], ["n1"], False),
    ],
)
def test_warm_room_is_a_node_with_the_weights_and_none_of_the_pods(present, serving, room):
    assert compute_warm_room(present, serving) is room


def test_the_status_round_trip_keeps_what_was_learned_and_drops_garbage():
    stats = StartupStats(
        warm=(20.0, 30.0), cold=(200.0,), samples=3, learned_until=500.0, counted_at_last=("x",)
    )
    raw = json.loads(json.dumps(stats.to_status().dump()))
    assert (raw["warmSeconds"], raw["coldSeconds"], raw["samples"]) == (25, 200, 3)
    assert StartupStats.from_status(raw) == stats
    broken = {"recentWarm": [1, "x", -5, None, True], "samples": "many", "learnedUntil": "soon"}
    assert StartupStats.from_status(broken) == StartupStats(warm=(1.0,))
    assert StartupStats.from_status(None) == StartupStats()


def test_a_status_of_many_pods_ready_in_one_second_stays_within_its_bound():
    pods = [pod(f"p{i:03d}", "n", 0, 100) for i in range(70)]
    stats = compute_startup_stats(StartupStats(), pods, False, None)
    assert stats.samples == 70
    status = stats.to_status()
    assert len(status.counted_at_last) == 64
    assert StartupStats.from_status(status.dump()).learned_until == 100
