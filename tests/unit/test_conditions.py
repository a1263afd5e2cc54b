from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from inferfleet.api import Condition
from inferfleet.planning.conditions import ConditionUpdate, find_true_condition, merge_condition

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def dumped(conditions: list[Condition]) -> list[dict]:
    return [c.dump() for c in conditions]


def test_a_new_condition_is_added_with_its_transition_time() -> None:
    conditions = merge_condition([], T0, ConditionUpdate("Ready", False, "Deploying", "creating"), 1)
    assert dumped(conditions) == [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Deploying",
            "message": "creating",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T12:00:00Z",
        }
    ]


def test_reason_message_and_generation_change_without_moving_the_transition_time() -> None:
    before = merge_condition([], T0, ConditionUpdate("Ready", False, "Deploying", "creating"), 1)
    after = merge_condition(before, T1, ConditionUpdate("Ready", False, "ReplicasNotReady", "0/1 ready"), 2)
    assert after != before
    [c] = after
    assert (c.reason, c.message, c.observed_generation) == ("ReplicasNotReady", "0/1 ready", 2)
    assert c.last_transition_time == "2026-01-01T12:00:00Z"


def test_a_status_flip_moves_the_transition_time() -> None:
    before = merge_condition([], T0, ConditionUpdate("Ready", False, "Deploying", "creating"), 1)
    after = merge_condition(before, T1, ConditionUpdate("Ready", True, "AllReplicasReady", "1/1 ready"), 1)
    assert after != before
    assert after[0].status == "True"
    assert after[0].last_transition_time == "2026-01-01T12:05:00Z"


def test_setting_the_same_condition_again_changes_nothing() -> None:
    update = ConditionUpdate("Ready", True, "AllReplicasReady", "1/1 ready")
    conditions = merge_condition([], T0, update, 3)
    before = dumped(conditions)
    assert dumped(merge_condition(conditions, T1, update, 3)) == before


def test_other_condition_types_are_left_alone() -> None:
    metrics = Condition.model_validate(
        {"type": "MetricsAvailable", "status": "True", "reason": "Ok", "message": ""}
    )
    conditions = merge_condition([metrics], T0, ConditionUpdate("Ready", True, "AllReplicasReady", "1/1"), 1)
    assert [c.type for c in conditions] == ["MetricsAvailable", "Ready"]
    assert conditions[0].dump() == {
        "type": "MetricsAvailable",
        "status": "True",
        "reason": "Ok",
        "message": "",
    }


def test_a_misspelt_condition_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="lastTransitionTim"):
        Condition.model_validate(
            {"type": "Ready", "status": "True", "lastTransitionTim": "2026-01-01T12:00:00Z"}
        )


READY = {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-06T10:00:00Z"}


@pytest.mark.parametrize(
    ("conditions", "found"),
    [
        ([{"type": "PodScheduled", "status": "True"}, READY], READY),
        ([{**READY, "status": "False"}], None),  # present but not True
        ([{**READY, "status": "Unknown"}], None),
        ([{"type": "PodScheduled", "status": "True"}], None),
        ([], None),
        (None, None),  # a new pod has no conditions at all
        (["not a condition", READY], READY),  # a malformed entry is skipped, not a crash
    ],
)
def test_a_condition_counts_only_when_it_is_true(conditions: list | None, found: dict | None) -> None:
    assert find_true_condition(conditions, "Ready") == found
