"""From an InferenceService and a queue sample to the scaling policy's inputs and the status it shows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from inferfleet.api import (
    ConditionType,
    InferenceServiceSpec,
    InferenceServiceStatus,
    MetricsReason,
    ScalingEvent,
    ScalingLimitedReason,
    ScalingReason,
)
from inferfleet.planning.conditions import ConditionUpdate, merge_condition, rfc3339
from inferfleet.planning.scaling import DEFAULT_TUNING, ScalerState, ScalingDecision, ScalingPolicy
from inferfleet.planning.startup import (
    PodStart,
    StartupStats,
    compute_expected_start,
    compute_node_warmth,
    compute_present_nodes,
    compute_startup_stats,
    compute_warm_room,
)

METRICS_AVAILABLE = ConditionType.METRICS_AVAILABLE
METRICS_UNAVAILABLE_REASON = MetricsReason.METRICS_UNAVAILABLE
SCALING_LIMITED = ConditionType.SCALING_LIMITED
HISTORY_LENGTH = 10


@dataclass(frozen=True)
class TickSample:
    """What one autoscaler tick measured for a service."""

    current_replicas: int
    queue_depth: float | None
    problem: str | None = None
    """Why there is no fresh sample (None: there is one)."""
    reason: MetricsReason = MetricsReason.METRICS_UNAVAILABLE
    """The MetricsAvailable reason that goes with `problem`."""


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


def compute_metrics_condition(problem: str | None, reason: MetricsReason) -> ConditionUpdate:
    """MetricsAvailable: True with a fresh sample, else False with why (`reason`, `problem`)."""
    if problem is None:
        return ConditionUpdate(
            METRICS_AVAILABLE, True, MetricsReason.QUEUE_DEPTH_REPORTED, "engine queue metrics are fresh"
        )
    return ConditionUpdate(METRICS_AVAILABLE, False, reason, problem)


def compute_limited_condition(decision: ScalingDecision) -> ConditionUpdate:
    """ScalingLimited: True when min/max clipped the recommendation, with the decision's reason."""
    if decision.limited:
        return ConditionUpdate(SCALING_LIMITED, True, ScalingReason(decision.reason), decision.message)
    return ConditionUpdate(
        SCALING_LIMITED, False, ScalingLimitedReason.WITHIN_BOUNDS, "the recommendation is within min/max"
    )


def build_autoscaler_status(
    previous: InferenceServiceStatus,
    decision: ScalingDecision,
    sample: TickSample,
    generation: int,
    now: float,
) -> InferenceServiceStatus:
    """The status after one autoscaler tick (without the scaler's window state)."""
    when = datetime.fromtimestamp(now, UTC)
    conditions = merge_condition(
        previous.conditions, when, compute_metrics_condition(sample.problem, sample.reason), generation
    )
    conditions = merge_condition(conditions, when, compute_limited_condition(decision), generation)
    changes: dict[str, Any] = {"conditions": conditions}
    if sample.queue_depth is not None:
        changes["queue_depth"] = round(sample.queue_depth, 1)
    if decision.replicas != sample.current_replicas:
        entry = ScalingEvent(
            time=rfc3339(when),
            from_replicas=sample.current_replicas,
            to_replicas=decision.replicas,
            reason=ScalingReason(decision.reason),
            message=decision.message,
        )
        changes["last_scale_time"] = rfc3339(when)
        changes["scaling_history"] = [*(previous.scaling_history or []), entry][-HISTORY_LENGTH:]
    return previous.evolve(**changes)


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
    """`build_autoscaler_status` on a status as plain dicts. `metrics_problem` (with its condition
    reason, `metrics_reason`, a `MetricsReason`) says why there is no sample."""
    sample = TickSample(current_replicas, queue_depth, metrics_problem, MetricsReason(metrics_reason))
    status = build_autoscaler_status(InferenceServiceStatus.read(previous), decision, sample, generation, now)
    return status.dump()


def with_scaler_state(status: Mapping[str, Any], state: ScalerState) -> dict[str, Any]:
    return {**status, "autoscaler": state.to_status()}


def with_scaler_window(status: InferenceServiceStatus, state: ScalerState) -> InferenceServiceStatus:
    """`status` carrying the scaler's windows, so that operator restarts keep them."""
    return status.evolve(autoscaler=state.to_status())


def scaler_state_of(status: Mapping[str, Any]) -> ScalerState:
    """The scaler's state as a status kept it: the windows, and the starts learned so far."""
    state = ScalerState.from_status(status.get("autoscaler"))
    return replace(state, startup=StartupStats.from_status(status.get("startup")))


def compute_startup_view(
    state: ScalerState, status: Mapping[str, Any], pods: list[PodStart], now: float
) -> tuple[ScalerState, float | None]:
    """Learn from the service's pods (warm or cold by `status.weights`), and the expected start
    of the next replica for the policy (None while nothing is learned)."""
    cache, present = compute_present_nodes(status.get("weights"))
    warmth = compute_node_warmth(state.warmth, present, now)
    stats = compute_startup_stats(state.startup, pods, cache, warmth)
    room = compute_warm_room(present, (p.node for p in pods))
    return replace(state, startup=stats, warmth=warmth), compute_expected_start(stats, room)


def with_startup(status: Mapping[str, Any], state: ScalerState) -> dict[str, Any]:
    """`status` with what has been learned of the starts (unchanged while nothing is)."""
    if state.startup == StartupStats():
        return dict(status)
    return {**status, "startup": state.startup.to_status().dump()}
