from datetime import UTC, datetime

from inferfleet.planning.autoscale import compute_autoscaler_status, scaler_state_of, with_scaler_state
from inferfleet.planning.scaling import ScalerState, ScalingDecision

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC).timestamp()


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_scale_up_is_recorded_in_history_with_its_reason() -> None:
    decision = ScalingDecision(
        replicas=3, reason="QueueAboveTarget", message="queue 9 on 1 replica", limited=False
    )
    status = compute_autoscaler_status({}, current_replicas=1, decision=decision, queue_depth=9.0,
                                       metrics_problem=None, generation=2, now=NOW)  # fmt: skip
    assert status["queueDepth"] == 9.0
    assert status["lastScaleTime"] == "2026-01-01T12:00:00Z"
    [entry] = status["scalingHistory"]
    assert entry == {"time": "2026-01-01T12:00:00Z", "from": 1, "to": 3,
                     "reason": "QueueAboveTarget", "message": "queue 9 on 1 replica"}  # fmt: skip
    assert conditions(status) == {"MetricsAvailable": ("True", "QueueDepthReported"),
                                  "ScalingLimited": ("False", "WithinBounds")}  # fmt: skip


def test_missing_metrics_set_the_condition_and_keep_the_last_queue_depth() -> None:
    decision = ScalingDecision(replicas=2, reason="MetricsUnavailable", message="holding", limited=False)
    previous = {"queueDepth": 4.0, "readyReplicas": 2}
    problem = "Prometheus did not answer"
    status = compute_autoscaler_status(previous, current_replicas=2, decision=decision, queue_depth=None,
                                       metrics_problem=problem, generation=1, now=NOW)  # fmt: skip
    assert status["queueDepth"] == 4.0
    assert "scalingHistory" not in status
    assert conditions(status)["MetricsAvailable"] == ("False", "MetricsUnavailable")
    assert previous == {"queueDepth": 4.0, "readyReplicas": 2}  # the input is not mutated


def test_a_clipped_recommendation_sets_scaling_limited_and_history_is_bounded() -> None:
    decision = ScalingDecision(
        replicas=8, reason="AtMaxReplicas", message="recommend 12, max 8", limited=True
    )
    history = [
        {"time": "t", "from": i, "to": i + 1, "reason": "QueueAboveTarget", "message": ""} for i in range(10)
    ]
    previous = {"scalingHistory": history}
    status = compute_autoscaler_status(
        previous,
        current_replicas=7,
        decision=decision,
        queue_depth=30,
        metrics_problem=None,
        generation=1,
        now=NOW,
    )
    assert conditions(status)["ScalingLimited"] == ("True", "AtMaxReplicas")
    assert len(status["scalingHistory"]) == 10
    assert status["scalingHistory"][-1]["to"] == 8


def test_the_scaler_state_round_trips_through_status() -> None:
    state = ScalerState(recommendations=((NOW - 10, 3), (NOW, 2)), last_active=NOW, last_scale_time=NOW - 10)
    assert scaler_state_of(with_scaler_state({"phase": "Ready"}, state)) == state
    assert scaler_state_of({}) == ScalerState()


def test_a_refused_custom_query_names_its_reason_in_the_condition() -> None:
    decision = ScalingDecision(replicas=2, reason="MetricsUnavailable", message="holding", limited=False)
    message = "scaling.query is not used: custom queries are off (chart value prometheus.customQueries)"
    status = compute_autoscaler_status({}, current_replicas=2, decision=decision, queue_depth=None,
                                       metrics_problem=message, metrics_reason="CustomQueryDisabled",
                                       generation=1, now=NOW)  # fmt: skip
    [available] = [c for c in status["conditions"] if c["type"] == "MetricsAvailable"]
    assert (available["status"], available["reason"], available["message"]) == (
        "False",
        "CustomQueryDisabled",
        message,
    )
    assert "queueDepth" not in status
