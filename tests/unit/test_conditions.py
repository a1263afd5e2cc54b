from datetime import UTC, datetime, timedelta

from inferfleet.planning.conditions import ConditionUpdate, set_condition

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_a_new_condition_is_added_with_its_transition_time() -> None:
    conditions: list[dict] = []
    assert set_condition(conditions, T0, ConditionUpdate("Ready", False, "Deploying", "creating"), 1)
    assert conditions == [
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
    conditions: list[dict] = []
    set_condition(conditions, T0, ConditionUpdate("Ready", False, "Deploying", "creating"), 1)
    assert set_condition(conditions, T1, ConditionUpdate("Ready", False, "ReplicasNotReady", "0/1 ready"), 2)
    [c] = conditions
    assert (c["reason"], c["message"], c["observedGeneration"]) == ("ReplicasNotReady", "0/1 ready", 2)
    assert c["lastTransitionTime"] == "2026-01-01T12:00:00Z"


def test_a_status_flip_moves_the_transition_time() -> None:
    conditions: list[dict] = []
    set_condition(conditions, T0, ConditionUpdate("Ready", False, "Deploying", "creating"), 1)
    assert set_condition(conditions, T1, ConditionUpdate("Ready", True, "AllReplicasReady", "1/1 ready"), 1)
    assert conditions[0]["status"] == "True"
    assert conditions[0]["lastTransitionTime"] == "2026-01-01T12:05:00Z"


def test_setting_the_same_condition_again_changes_nothing() -> None:
    conditions: list[dict] = []
    update = ConditionUpdate("Ready", True, "AllReplicasReady", "1/1 ready")
    set_condition(conditions, T0, update, 3)
    before = [dict(c) for c in conditions]
    assert not set_condition(conditions, T1, update, 3)
    assert conditions == before


def test_other_condition_types_are_left_alone() -> None:
    conditions = [{"type": "MetricsAvailable", "status": "True", "reason": "Ok", "message": ""}]
    set_condition(conditions, T0, ConditionUpdate("Ready", True, "AllReplicasReady", "1/1"), 1)
    assert [c["type"] for c in conditions] == ["MetricsAvailable", "Ready"]
    assert conditions[0] == {"type": "MetricsAvailable", "status": "True", "reason": "Ok", "message": ""}
