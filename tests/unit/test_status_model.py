"""The typed status: a misspelt field fails where the status is built, a status read back from the
cluster keeps what this version knows, and every reason the operator writes is an enum member."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from inferfleet.api import (
    EventReason,
    InferenceServiceStatus,
    MetricsReason,
    PlacedReason,
    ReadyReason,
    ShardPlan,
)
from inferfleet.planning.service import Blocked
from inferfleet.planning.status import Observation, build_status, compute_status

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        {"readyReplica": 2},  # misspelt readyReplicas
        {"conditions": [{"type": "Ready", "status": "True", "reasons": "AllReplicasReady"}]},
        {"shardPlan": {"tensorParallel": 4, "pipelineParallel": 1, "gpusPerPod": 4, "podsPerReplica": 1,
                       "weightsGib": 131.5}},  # the alias is weightsGiB
        {"scalingHistory": [{"time": "t", "from": 1, "to": 2, "reason": "QueueAboveTarget", "why": "x"}]},
    ],
)  # fmt: skip
def test_a_status_with_a_misspelt_or_unknown_field_cannot_be_built(raw: dict) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        InferenceServiceStatus.model_validate(raw)


def test_evolving_a_status_refuses_a_field_it_does_not_have() -> None:
    status = InferenceServiceStatus(replicas=1)
    assert status.evolve(ready_replicas=1).dump() == {"conditions": [], "replicas": 1, "readyReplicas": 1}
    with pytest.raises(ValidationError, match="ready_replica"):
        status.evolve(ready_replica=1)


def test_a_status_read_from_the_cluster_drops_what_this_version_does_not_know() -> None:
    raw = {
        "phase": "Ready",
        "futureField": {"x": 1},
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady", "futureKey": 1}],
        "shardPlan": {"tensorParallel": 4, "pipelineParallel": 1, "gpusPerPod": 4, "podsPerReplica": 1},
    }
    status = InferenceServiceStatus.read(raw)
    assert status.dump() == {
        "phase": "Ready",
        "conditions": [{"type": "Ready", "status": "True", "reason": "AllReplicasReady"}],
        "shardPlan": {"tensorParallel": 4, "pipelineParallel": 1, "gpusPerPod": 4, "podsPerReplica": 1,
                      "totalGpus": 4, "layout": "4x1"},
    }  # fmt: skip


def test_a_field_a_newer_operator_wrote_in_a_shape_this_one_cannot_read_is_dropped_alone() -> None:
    status = InferenceServiceStatus.read({"phase": "Hibernating", "replicas": 2, "selector": "s"})
    assert status.dump() == {"conditions": [], "replicas": 2, "selector": "s"}


def test_the_reconciler_keeps_what_the_autoscaler_wrote() -> None:
    previous = InferenceServiceStatus.read(
        {"queueDepth": 3, "lastScaleTime": "2026-01-01T00:00:00Z", "autoscaler": {"lastActive": None}}
    )
    obs = Observation(3, 0, "sel", "url", None, None, None)
    status = build_status(obs, previous, NOW)
    assert (status.queue_depth, status.last_scale_time) == (3.0, "2026-01-01T00:00:00Z")
    assert status.autoscaler == {"lastActive": None}


def test_an_unchanged_status_round_trips_to_the_same_dict() -> None:
    obs = Observation(3, 0, "sel", "url", None, None, None)
    first = compute_status(obs, {"queueDepth": 4.5, "scalingHistory": []}, NOW)
    assert compute_status(obs, first, NOW) == first
    assert first["scalingHistory"] == []


def test_the_shard_plan_is_frozen_and_fills_its_derived_fields() -> None:
    plan = ShardPlan(tensor_parallel=8, pipeline_parallel=2, gpus_per_pod=8, pods_per_replica=2)
    assert (plan.total_gpus, plan.layout) == (16, "8x2")
    with pytest.raises(ValidationError, match="frozen"):
        plan.tensor_parallel = 4  # type: ignore[misc]


# Every reason string the handlers and metrics write today, as they spell it.
HANDLER_REASONS = [
    (ReadyReason, "InvalidSpec"),
    (ReadyReason, "NameConflict"),
    (ReadyReason, "ApplyFailed"),
    (ReadyReason, "NoMatchingNodes"),
    (ReadyReason, "UnknownGpuMemory"),
    (ReadyReason, "ModelDoesNotFit"),
    (ReadyReason, "InsufficientCapacity"),
    (ReadyReason, "PolicyViolation"),
    (ReadyReason, "EngineNotMultiNode"),
    (ReadyReason, "PodCreationFailed"),
    (ReadyReason, "ReplicasNotReady"),
    (PlacedReason, "InsufficientCapacity"),
    (MetricsReason, "MetricsUnavailable"),
    (MetricsReason, "CustomQueryDisabled"),
    (MetricsReason, "InvalidQuery"),
    (EventReason, "LiteralSecretInSpec"),
    (EventReason, "MetricsAvailable"),
]


@pytest.mark.parametrize(("enum", "reason"), HANDLER_REASONS)
def test_every_reason_the_handlers_write_is_an_enum_member(enum: type, reason: str) -> None:
    assert enum(reason) == reason


def test_a_misspelt_blocked_reason_fails_where_it_is_made() -> None:
    assert Blocked("InvalidSpec", "bad").reason is ReadyReason.INVALID_SPEC
    with pytest.raises(ValueError, match="InvalidSpecs"):
        Blocked("InvalidSpecs", "bad")
