"""The status an InferenceService should show, from what was planned and observed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inferfleet.api import (
    ConditionStatus,
    ConditionType,
    InferenceServiceStatus,
    ModelFactsSource,
    ModelReason,
    ModelStatus,
    Phase,
    PlacedReason,
    ReadyReason,
    ReplicaPlacement,
    ShardPlan,
)
from inferfleet.planning.conditions import ConditionUpdate, bound_message, merge_condition
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.service import Blocked, ServicePlan

READY = ConditionType.READY
PLACED = ConditionType.PLACED
MODEL_CONSISTENT = ConditionType.MODEL_CONSISTENT
PROGRESSING_REASONS = frozenset(
    {ReadyReason.DEPLOYING, ReadyReason.ROLLING_OUT, ReadyReason.WAITING_FOR_NODES}
)
"""False conditions whose reason is progress, posted as Normal Events."""
MAX_RANGES = 4
"""Runs of replica numbers named per summary line; more are counted, not listed."""


@dataclass(frozen=True)
class ObservedDeployment:
    replicas: int
    ready_replicas: int
    updated_replicas: int
    generation: int
    observed_generation: int
    replica_failure: str | None = None
    """Why pods cannot be created (the ReplicaFailure condition the Deployment copies from its
    ReplicaSet: a Pod Security profile, a ResourceQuota, a missing ServiceAccount)."""

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ObservedDeployment:
        status = obj.get("status") or {}
        meta = obj.get("metadata") or {}
        failure = next(
            (
                c.get("message") or c.get("reason") or "pods cannot be created"
                for c in status.get("conditions") or []
                if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
            ),
            None,
        )
        return cls(
            replicas=int(status.get("replicas") or 0),
            ready_replicas=int(status.get("readyReplicas") or 0),
            updated_replicas=int(status.get("updatedReplicas") or 0),
            generation=int(meta.get("generation") or 0),
            observed_generation=int(status.get("observedGeneration") or 0),
            replica_failure=str(failure) if failure is not None else None,
        )


@dataclass(frozen=True)
class Observation:
    generation: int
    desired_replicas: int
    selector: str
    endpoint: str
    blocked: Blocked | None
    shard_plan: ShardPlan | None
    deployment: ObservedDeployment | None
    placed: ConditionUpdate | None = None
    """Multi-node services only: whether every replica group has its nodes."""
    placement: tuple[ReplicaPlacement, ...] = ()
    apply_error: Blocked | None = None
    """Why the last apply of a child object failed (ApplyFailed, or NameConflict: its name is
    another object's); Ready stays False with that reason until an apply succeeds."""
    model: ModelStatus | None = None
    model_consistent: ConditionUpdate | None = None
    """Whether the spec agrees with the model's known facts; None when none are known."""


def compute_ranges(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive numbers: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    runs: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def _replicas_text(numbers: Sequence[int], noun: str) -> str:
    runs = compute_ranges(numbers)
    shown = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:MAX_RANGES])
    if len(runs) > MAX_RANGES:
        shown += ", …"
    if len(numbers) == 1:
        return f"{noun} {shown}"
    return f"{noun}s {shown} ({len(numbers)} {noun}s)"


def summarize_by_replica(values: Mapping[int, str], noun: str = "replica", joiner: str = ": ") -> str:
    """One line per distinct value, naming its replicas as runs, instead of one per replica:
    {3: m, 4: m, ..., 9999: m} -> "replicas 3-9999 (9997 replicas): m". At most
    MAX_MESSAGE_LENGTH characters however many replicas there are."""
    by_value: dict[str, list[int]] = {}
    for replica, value in sorted(values.items()):
        by_value.setdefault(value, []).append(replica)
    lines = [f"{_replicas_text(replicas, noun)}{joiner}{value}" for value, replicas in by_value.items()]
    return bound_message("; ".join(lines))


def aggregate_groups(
    groups: Sequence[ObservedGroup], creation_failures: Mapping[int, str] | None = None
) -> ObservedDeployment:
    """Replica groups seen as one Deployment whose replicas are whole groups; `creation_failures`
    (replica -> why its pods cannot be created) plays the Deployment's ReplicaFailure."""
    failures = summarize_by_replica(creation_failures or {}, "replica group")
    return ObservedDeployment(
        replicas=len(groups),
        ready_replicas=sum(1 for g in groups if g.ready),
        updated_replicas=sum(1 for g in groups if g.observed_generation >= g.generation),
        generation=1,
        observed_generation=1,
        replica_failure=failures or None,
    )


def compute_placed(plan: ServicePlan) -> ConditionUpdate | None:
    if not plan.multi_node or plan.blocked is not None:
        return None
    if plan.shortfalls:
        details = summarize_by_replica({r: s.message for r, s in plan.shortfalls.items()})
        return ConditionUpdate(PLACED, False, _waiting_reason(plan), details)
    domains = summarize_by_replica({r: p.domain for r, p in plan.placements.items()}, joiner=" in ")
    return ConditionUpdate(
        PLACED,
        True,
        PlacedReason.ALL_REPLICAS_PLACED,
        bound_message(f"replica groups placed whole: {domains}"),
    )


def _waiting_reason(plan: ServicePlan) -> PlacedReason:
    """NodesUnavailable when the node autoscaler refused a group, WaitingForNodes while it is
    asked, else InsufficientCapacity."""
    reasons = {plan.placed_reasons.get(r) for r in plan.shortfalls}
    for reason in (PlacedReason.NODES_UNAVAILABLE, PlacedReason.WAITING_FOR_NODES):
        if reason in reasons:
            return reason
    return PlacedReason.INSUFFICIENT_CAPACITY


def compute_model_consistent(plan: ServicePlan) -> ConditionUpdate | None:
    """ModelConsistent, when the model's facts are known from more than the spec."""
    model = plan.model
    if model is None or model.source == ModelFactsSource.SPEC:
        return None
    if plan.model_mismatches:
        message = bound_message("; ".join(plan.model_mismatches) + "; the spec's values are used")
        return ConditionUpdate(MODEL_CONSISTENT, False, ModelReason.SPEC_CONTRADICTS_MODEL, message)
    origin = model.known_model or "the model's files"
    count = f"{model.parameters:,} parameters" if model.parameters else "an unknown parameter count"
    dtype = f", {model.dtype.value}" if model.dtype else ""
    return ConditionUpdate(
        MODEL_CONSISTENT,
        True,
        ModelReason.SPEC_MATCHES_MODEL,
        f"the spec agrees with {origin} ({model.source.value}): {count}{dtype}",
    )


def pod_placement_status(
    pods: Sequence[tuple[str, str]], node_domains: Mapping[str, str]
) -> tuple[ReplicaPlacement, ...]:
    """Single-pod replicas: (pod, node) pairs by pod name, each with its node's domain."""
    return tuple(
        ReplicaPlacement(replica=i, domain=node_domains.get(node, ""), nodes=[node])
        for i, (_, node) in enumerate(sorted(pods))
    )


def placement_status(groups: Sequence[ObservedGroup]) -> tuple[ReplicaPlacement, ...]:
    return tuple(
        ReplicaPlacement(replica=g.replica, domain=g.domain, nodes=list(g.nodes))
        for g in sorted(groups, key=lambda g: g.replica)
    )


def compute_ready(obs: Observation) -> tuple[ConditionUpdate, Phase]:
    if obs.blocked is not None:
        phase = Phase.FAILED if obs.blocked.reason == ReadyReason.INVALID_SPEC else Phase.PENDING
        return ConditionUpdate(READY, False, obs.blocked.reason, obs.blocked.message), phase
    d = obs.deployment
    if obs.apply_error is not None:
        phase = Phase.DEGRADED if d is not None and d.ready_replicas else Phase.DEPLOYING
        return ConditionUpdate(READY, False, obs.apply_error.reason, obs.apply_error.message), phase
    if obs.placed is not None and not obs.placed.status and (d is None or d.ready_replicas == 0):
        return ConditionUpdate(
            READY, False, ReadyReason(obs.placed.reason), obs.placed.message
        ), Phase.PLACING
    if d is None:
        return ConditionUpdate(
            READY, False, ReadyReason.DEPLOYING, "creating the engine Deployment"
        ), Phase.DEPLOYING
    desired = obs.desired_replicas
    if desired == 0:
        return ConditionUpdate(READY, True, ReadyReason.SCALED_TO_ZERO, "0 replicas desired"), Phase.READY
    counts = f"{d.ready_replicas}/{desired} replicas ready"
    if d.replica_failure is not None and d.ready_replicas < desired:
        phase = Phase.DEGRADED if d.ready_replicas else Phase.DEPLOYING
        return ConditionUpdate(
            READY, False, ReadyReason.POD_CREATION_FAILED, f"{counts}; {d.replica_failure}"
        ), phase
    rolled_out = (
        d.observed_generation >= d.generation and d.updated_replicas >= desired and d.replicas == desired
    )
    if d.ready_replicas >= desired and rolled_out:
        return ConditionUpdate(READY, True, ReadyReason.ALL_REPLICAS_READY, counts), Phase.READY
    if not rolled_out and d.ready_replicas == 0:
        return ConditionUpdate(
            READY, False, ReadyReason.DEPLOYING, f"{counts}; starting engine pods"
        ), Phase.DEPLOYING
    if not rolled_out:
        return ConditionUpdate(
            READY, False, ReadyReason.ROLLING_OUT, f"{counts}; rolling out a new engine spec"
        ), Phase.DEGRADED
    phase = Phase.DEGRADED if d.ready_replicas else Phase.DEPLOYING
    return ConditionUpdate(READY, False, ReadyReason.REPLICAS_NOT_READY, counts), phase


def build_status(obs: Observation, previous: InferenceServiceStatus, now: datetime) -> InferenceServiceStatus:
    """The whole status to write; equal to `previous` when nothing a user sees changed."""
    ready, phase = compute_ready(obs)
    conditions = merge_condition(previous.conditions, now, ready, obs.generation)
    for extra in (obs.placed, obs.model_consistent):
        if extra is not None:
            conditions = merge_condition(conditions, now, extra, obs.generation)
    if obs.model_consistent is None:  # no facts to compare with any more (the source changed)
        conditions = [c for c in conditions if c.type != MODEL_CONSISTENT]
    changes: dict[str, Any] = {
        "observed_generation": obs.generation,
        "phase": phase,
        "conditions": conditions,
        "replicas": obs.deployment.replicas if obs.deployment else 0,
        "ready_replicas": obs.deployment.ready_replicas if obs.deployment else 0,
        "selector": obs.selector,
        "endpoint": obs.endpoint,
    }
    if obs.shard_plan is not None:
        changes["shard_plan"] = obs.shard_plan
    if obs.model is not None:
        changes["model"] = obs.model
    if obs.placed is not None or obs.placement:
        changes["placement"] = list(obs.placement)
    return previous.evolve(**changes)


def compute_status(obs: Observation, previous: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """`build_status` on a status as plain dicts (as watched, and as patched)."""
    return build_status(obs, InferenceServiceStatus.read(previous), now).dump()


def compute_status_events(
    previous: InferenceServiceStatus, current: InferenceServiceStatus
) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for transitions users care about; none on idle reconciles."""
    events = []
    for type_ in (MODEL_CONSISTENT, PLACED, READY):
        before = next((c for c in previous.conditions if c.type == type_), None)
        after = next((c for c in current.conditions if c.type == type_), None)
        if after is None:
            continue
        if before is not None and (before.status, before.reason) == (after.status, after.reason):
            continue
        if type_ == MODEL_CONSISTENT and before is None and after.status == ConditionStatus.TRUE:
            continue  # agreeing from the start is not news
        progressing = after.status == ConditionStatus.TRUE or after.reason in PROGRESSING_REASONS
        events.append(("Normal" if progressing else "Warning", after.reason or "", after.message or ""))
    return events


def compute_events(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """`compute_status_events` on statuses as plain dicts."""
    return compute_status_events(InferenceServiceStatus.read(previous), InferenceServiceStatus.read(current))
