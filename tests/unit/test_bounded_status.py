"""Condition and Event messages stay short summaries however big the plan (issue 13, item 1)."""

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from inferfleet.api import PlacedReason
from inferfleet.planning.conditions import MAX_MESSAGE_LENGTH, bound_message
from inferfleet.planning.placement import GroupPlacement, Shortfall
from inferfleet.planning.service import Blocked, GroupInputs, ServicePlan, plan_service
from inferfleet.planning.status import (
    Observation,
    aggregate_groups,
    compute_events,
    compute_placed,
    compute_ranges,
    compute_status,
    summarize_by_replica,
)
from tests.unit.test_service_plan import CLUSTER, OWNER, h100_nodes, spec_405b

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NEED = "needs 2 nodes with 8 free NVIDIA-H100-80GB-HBM3 GPUs in one topology.kubernetes.io/zone"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("short", "short"),
        ("x" * 40, "x" * 40),
        ("x" * 41, "x" * 18 + "… (23 more characters)"),
        ("x" * 100, "x" * 17 + "… (83 more characters)"),
    ],
)
def test_a_message_over_the_limit_is_cut_and_says_how_much_is_left_out(message: str, expected: str) -> None:
    assert bound_message(message, limit=40) == expected
    assert len(expected) <= 40


def test_bound_message_keeps_the_head_and_counts_the_rest() -> None:
    text = "replica 0: " + "y" * 3000
    bounded = bound_message(text)
    assert len(bounded) <= MAX_MESSAGE_LENGTH
    kept = bounded.split("…")[0]
    assert text.startswith(kept)
    assert bounded.endswith(f"… ({len(text) - len(kept)} more characters)")


@pytest.mark.parametrize(
    ("numbers", "runs"),
    [
        ([], []),
        ([4], [(4, 4)]),
        ([2, 0, 1, 5], [(0, 2), (5, 5)]),
        ([9, 7, 8, 3, 1], [(1, 1), (3, 3), (7, 9)]),
    ],
)
def test_replica_numbers_become_sorted_runs(numbers: list[int], runs: list[tuple[int, int]]) -> None:
    assert compute_ranges(numbers) == runs


@pytest.mark.parametrize(
    ("values", "summary"),
    [
        ({}, ""),
        ({0: "full"}, "replica 0: full"),
        ({0: "full", 1: "full"}, "replicas 0-1 (2 replicas): full"),
        ({r: "full" for r in range(3, 10000)}, "replicas 3-9999 (9997 replicas): full"),
        ({0: "a", 1: "b", 2: "a"}, "replicas 0, 2 (2 replicas): a; replica 1: b"),
        (
            {r: "full" for r in range(0, 20, 2)},
            "replicas 0, 2, 4, 6, … (10 replicas): full",
        ),
    ],
)
def test_replicas_with_the_same_message_are_summarized_in_one_line(
    values: dict[int, str], summary: str
) -> None:
    assert summarize_by_replica(values) == summary


def test_many_distinct_messages_still_fit_in_the_limit() -> None:
    summary = summarize_by_replica({r: f"reason number {r}" for r in range(10000)})
    assert len(summary) <= MAX_MESSAGE_LENGTH
    assert summary.startswith("replica 0: reason number 0; replica 1: reason number 1; ")


def multi_node_plan() -> ServicePlan:
    plan = plan_service(OWNER, spec_405b(1), CLUSTER, GroupInputs(gpu_nodes=h100_nodes({"a": 2})))
    assert plan.multi_node
    assert plan.blocked is None
    return plan


def test_10000_replicas_that_do_not_fit_make_a_one_line_placed_condition() -> None:
    # 405B on 16 nodes: 8 groups fit, 9992 do not. The old message listed every replica: 1.58 MB.
    placements = {r: GroupPlacement(f"zone-{r % 2}", (f"n{2 * r}", f"n{2 * r + 1}")) for r in range(8)}
    shortfalls = {r: Shortfall(f"{NEED}; no node has that many (16 nodes with fewer free GPUs)") for r in
                  range(8, 10000)}  # fmt: skip
    plan = replace(multi_node_plan(), placements=placements, shortfalls=shortfalls)
    placed = compute_placed(plan)
    assert placed is not None
    assert (placed.status, placed.reason) == (False, "InsufficientCapacity")
    assert placed.message == (
        f"replicas 8-9999 (9992 replicas): {NEED}; no node has that many (16 nodes with fewer free GPUs)"
    )


def test_10000_placed_replicas_are_summarized_by_domain() -> None:
    placements = {r: GroupPlacement(f"zone-{r % 2}", ("a", "b")) for r in range(10000)}
    placed = compute_placed(replace(multi_node_plan(), placements=placements))
    assert placed is not None
    assert placed.status
    assert placed.message.startswith(
        "replica groups placed whole: replicas 0, 2, 4, 6, … (5000 replicas) in zone-0; "
        "replicas 1, 3, 5, 7, … (5000 replicas) in zone-1"
    )
    assert len(placed.message) <= MAX_MESSAGE_LENGTH


def test_creation_failures_of_many_groups_are_one_line() -> None:
    failures = {r: 'pods "x" is forbidden: exceeded quota: gpus' for r in range(500)}
    deployment = aggregate_groups([], failures)
    assert (
        deployment.replica_failure
        == 'replica groups 0-499 (500 replica groups): pods "x" is forbidden: exceeded quota: gpus'
    )


def test_a_huge_blocked_message_makes_a_small_status_and_event() -> None:
    # InvalidSpec lists every validation error: one per env entry of a 10,000-entry spec.
    errors = "; ".join(f"engine.env.{i}.name: String should match pattern" for i in range(10000))
    obs = Observation(
        generation=1, desired_replicas=1, selector="s", endpoint="e",
        blocked=Blocked("InvalidSpec", f"spec rejected: {errors}"), shard_plan=None, deployment=None,
    )  # fmt: skip
    status = compute_status(obs, {}, NOW)
    [ready] = status["conditions"]
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith("spec rejected: engine.env.0.name: String should match pattern; ")
    assert len(ready["message"]) <= MAX_MESSAGE_LENGTH
    assert len(json.dumps(status)) < 2 * MAX_MESSAGE_LENGTH
    [(_, _, event)] = compute_events({}, status)
    assert event == ready["message"]


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        ({}, "InsufficientCapacity"),
        ({1: PlacedReason.WAITING_FOR_NODES}, "WaitingForNodes"),
        ({1: PlacedReason.WAITING_FOR_NODES, 2: PlacedReason.NODES_UNAVAILABLE}, "NodesUnavailable"),
        ({7: PlacedReason.NODES_UNAVAILABLE}, "InsufficientCapacity"),  # a group that no longer waits
    ],
)
def test_groups_waiting_on_the_node_autoscaler_say_so_in_placeds_reason(
    reasons: dict[int, PlacedReason], expected: str
) -> None:
    shortfalls = {r: Shortfall(NEED) for r in (1, 2)}
    placed = compute_placed(replace(multi_node_plan(), shortfalls=shortfalls, placed_reasons=reasons))
    assert placed is not None
    assert (placed.status, placed.reason) == (False, expected)
