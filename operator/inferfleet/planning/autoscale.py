"""From an InferenceService and a queue sample to the scaling policy's inputs and the status it shows."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from inferfleet.api import InferenceServiceSpec
from inferfleet.planning.conditions import ConditionUpdate, rfc3339, set_condition
from inferfleet.planning.scaling import DEFAULT_TUNING, ScalerState, ScalingDecision, ScalingPolicy

METRICS_AVAILABLE = "MetricsAvailable"
METRICS_UNAVAILABLE_REASON = "MetricsUnavailable"
SCALING_LIMITED = "ScalingLimited"
HISTORY_LENGTH = 10


def build_scaling_policy(spec: InferenceServiceSpec) -> ScalingPolicy | None:
    s = spec.scaling
    if s is None:
        return None
    return ScalingPolicy(
        min_replicas=s.min_replicas,
        max_replicas=s.max_replicas,
        target_queue_depth=s.target_queue_depth,
        max_concurrent_requests=spec.engine.max_concurrent_requests,
        scale_up_stabilization_seconds=s.scale_up_stabilization_seconds,
        scale_down_stabilization_seconds=s.scale_down_stabilization_seconds,
        scale_to_zero_after_seconds=s.scale_to_zero_after_seconds,
        # Step down at most once per window when the user's window is shorter than the default pace.
        tuning=replace(
            DEFAULT_TUNING,
            scale_down_interval_seconds=min(
                DEFAULT_TUNING.scale_down_interval_seconds, s.scale_down_stabilization_seconds
            ),
        ),
    )


def compute_autoscaler_status(
    previous: Mapping[str, Any],
    *,
    current_replicas: int,
    decision: ScalingDecision,
    queue_depth: float | None,
    metrics_problem: str | None,
    generation: int,
    now: float,
    metrics_reason: str = METRICS_UNAVAILABLE_REASON,
) -> dict[str, Any]:
    """The status after one autoscaler tick (without the scaler's window state).

    `metrics_problem` (with its condition reason, `metrics_reason`) says why there is no sample."""
    when = datetime.fromtimestamp(now, UTC)
    status: dict[str, Any] = copy.deepcopy(dict(previous))
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    if metrics_problem is None:
        available = ConditionUpdate(
            METRICS_AVAILABLE, True, "QueueDepthReported", "engine queue metrics are fresh"
        )
    else:
        available = ConditionUpdate(METRICS_AVAILABLE, False, metrics_reason, metrics_problem)
    set_condition(conditions, when, available, generation)
    if decision.limited:
        limited = ConditionUpdate(SCALING_LIMITED, True, decision.reason, decision.message)
    else:
        limited = ConditionUpdate(
            SCALING_LIMITED, False, "WithinBounds", "the recommendation is within min/max"
        )
    set_condition(conditions, when, limited, generation)
    if queue_depth is not None:
        status["queueDepth"] = round(queue_depth, 1)
    if decision.replicas != current_replicas:
        status["lastScaleTime"] = rfc3339(when)
        entry = {
            "time": rfc3339(when),
            "from": current_replicas,
            "to": decision.replicas,
            "reason": decision.reason,
            "message": decision.message,
        }
        status["scalingHistory"] = [*(status.get("scalingHistory") or []), entry][-HISTORY_LENGTH:]
    return status


def with_scaler_state(status: Mapping[str, Any], state: ScalerState) -> dict[str, Any]:
    return {**status, "autoscaler": state.to_status()}


def scaler_state_of(status: Mapping[str, Any]) -> ScalerState:
    return ScalerState.from_status(status.get("autoscaler"))
