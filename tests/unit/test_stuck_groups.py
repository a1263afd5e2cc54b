"""A group member the scheduler refused: restart its group now, after a grace, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inferfleet.planning.stuck import (
    UNSCHEDULABLE_GRACE,
    UnschedulableMember,
    build_unschedulable_member,
    compute_stuck_groups,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TAINTED = (
    "0/25 nodes are available: 1 node(s) had untolerated taint(s), 24 node(s) didn't match Pod's "
    "node affinity/selector. preemption: 0/25 nodes are available: 25 Preemption is not helpful."
)
GPUS_TAKEN = (
    "0/25 nodes are available: 1 Insufficient nvidia.com/gpu, 24 node(s) didn't match Pod's node "
    "affinity/selector. preemption: 0/25 nodes are available: 25 Preemption is not helpful."
)


def member(replica: int, message: str, age: timedelta | None) -> UnschedulableMember:
    return UnschedulableMember(replica, f"uid-{replica}", message, None if age is None else NOW - age)


def test_a_member_whose_gpus_were_taken_restarts_its_group_at_once() -> None:
    stuck = compute_stuck_groups([member(0, GPUS_TAKEN, timedelta(seconds=1))], NOW)
    assert stuck.restart == {(0, "uid-0")}
    assert stuck.recheck_at is None


def test_a_member_on_a_node_still_tainted_not_ready_waits_out_the_grace_and_is_looked_at_again() -> None:
    stuck = compute_stuck_groups([member(1, TAINTED, timedelta(seconds=5))], NOW)
    assert stuck.restart == frozenset()
    assert stuck.recheck_at == NOW - timedelta(seconds=5) + UNSCHEDULABLE_GRACE


def test_a_refusal_that_outlasts_the_grace_restarts_the_group() -> None:
    stuck = compute_stuck_groups([member(1, TAINTED, UNSCHEDULABLE_GRACE)], NOW)
    assert stuck.restart == {(1, "uid-1")}


def test_the_earliest_grace_end_is_when_to_look_again() -> None:
    members = [member(0, TAINTED, timedelta(seconds=10)), member(2, TAINTED, timedelta(seconds=30))]
    stuck = compute_stuck_groups(members, NOW)
    assert stuck.restart == frozenset()
    assert stuck.recheck_at == NOW - timedelta(seconds=30) + UNSCHEDULABLE_GRACE


def test_a_refusal_without_a_time_cannot_be_waited_on_and_restarts_the_group() -> None:
    assert compute_stuck_groups([member(3, TAINTED, None)], NOW).restart == {(3, "uid-3")}


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (
            [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": GPUS_TAKEN,
              "lastTransitionTime": "2026-12-01T11:59:58Z"}],
            UnschedulableMember(4, "sts", GPUS_TAKEN, datetime(2026, 12, 1, 11, 59, 58, tzinfo=UTC)),
        ),
        ([{"type": "PodScheduled", "status": "True"}], None),
        ([{"type": "PodScheduled", "status": "False", "reason": "SchedulerError"}], None),
        ([], None),
    ],
)  # fmt: skip
def test_a_refusal_is_read_from_the_pods_scheduled_condition(
    conditions: list[dict[str, str]], expected: UnschedulableMember | None
) -> None:
    assert build_unschedulable_member(4, "sts", conditions) == expected
