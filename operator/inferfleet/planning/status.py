"""The status an InferenceService should show, from what was planned and observed."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inferfleet.api import Phase
from inferfleet.planning import sizing
from inferfleet.planning.conditions import ConditionUpdate, bound_message, find_condition, set_condition
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.service import Blocked, ServicePlan

READY = "Ready"
PLACED = "Placed"
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
    shard_plan: sizing.ShardPlan | None
    deployment: ObservedDeployment | None
    placed: ConditionUpdate | None = None
    """Multi-node services only: whether every replica group has its nodes."""
    placement: tuple[dict[str, Any], ...] = ()
    apply_error: Blocked | None = None
    """Why the last apply of a child object failed (ApplyFailed, or NameConflict: its name is
    another object's); Ready stays False with that reason until an apply succeeds."""


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
        return ConditionUpdate(PLACED, False, "InsufficientCapacity", details)
    domains = summarize_by_replica({r: p.domain for r, p in plan.placements.items()}, joiner=" in ")
    return ConditionUpdate(
        PLACED, True, "AllReplicasPlaced", bound_message(f"replica groups placed whole: {domains}")
    )


def pod_placement_status(
    pods: Sequence[tuple[str, str]], node_domains: Mapping[str, str]
) -> tuple[dict[str, Any], ...]:
    """Single-pod replicas: (pod, node) pairs by pod name, each with its node's domain."""
    return tuple(
        {"replica": i, "domain": node_domains.get(node, ""), "nodes": [node]}
        for i, (_, node) in enumerate(sorted(pods))
    )


def placement_status(groups: Sequence[ObservedGroup]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"replica": g.replica, "domain": g.domain, "nodes": list(g.nodes)}
        for g in sorted(groups, key=lambda g: g.replica)
    )


def compute_ready(obs: Observation) -> tuple[ConditionUpdate, Phase]:
    if obs.blocked is not None:
        phase = Phase.FAILED if obs.blocked.reason == "InvalidSpec" else Phase.PENDING
        return ConditionUpdate(READY, False, obs.blocked.reason, obs.blocked.message), phase
    d = obs.deployment
    if obs.apply_error is not None:
        phase = Phase.DEGRADED if d is not None and d.ready_replicas else Phase.DEPLOYING
        return ConditionUpdate(READY, False, obs.apply_error.reason, obs.apply_error.message), phase
    if obs.placed is not None and not obs.placed.status and (d is None or d.ready_replicas == 0):
        return ConditionUpdate(READY, False, obs.placed.reason, obs.placed.message), Phase.PLACING
    if d is None:
        return ConditionUpdate(READY, False, "Deploying", "creating the engine Deployment"), Phase.DEPLOYING
    desired = obs.desired_replicas
    if desired == 0:
        return ConditionUpdate(READY, True, "ScaledToZero", "0 replicas desired"), Phase.READY
    counts = f"{d.ready_replicas}/{desired} replicas ready"
    if d.replica_failure is not None and d.ready_replicas < desired:
        phase = Phase.DEGRADED if d.ready_replicas else Phase.DEPLOYING
        return ConditionUpdate(READY, False, "PodCreationFailed", f"{counts}; {d.replica_failure}"), phase
    rolled_out = (
        d.observed_generation >= d.generation and d.updated_replicas >= desired and d.replicas == desired
    )
    if d.ready_replicas >= desired and rolled_out:
        return ConditionUpdate(READY, True, "AllReplicasReady", counts), Phase.READY
    if not rolled_out and d.ready_replicas == 0:
        return ConditionUpdate(READY, False, "Deploying", f"{counts}; starting engine pods"), Phase.DEPLOYING
    if not rolled_out:
        return ConditionUpdate(
            READY, False, "RollingOut", f"{counts}; rolling out a new engine spec"
        ), Phase.DEGRADED
    phase = Phase.DEGRADED if d.ready_replicas else Phase.DEPLOYING
    return ConditionUpdate(READY, False, "ReplicasNotReady", counts), phase


def shard_plan_status(plan: sizing.ShardPlan) -> dict[str, Any]:
    return {
        "tensorParallel": plan.tensor_parallel,
        "pipelineParallel": plan.pipeline_parallel,
        "gpusPerPod": plan.gpus_per_pod,
        "podsPerReplica": plan.pods_per_replica,
        "totalGpus": plan.total_gpus,
        "weightsGiB": plan.weights_gib,
        "kvCacheGiB": plan.kv_cache_gib,
        "perGpuGiB": plan.per_gpu_gib,
        "layout": plan.layout,
    }


def compute_status(obs: Observation, previous: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The whole status to write; equal to `previous` when nothing a user sees changed."""
    conditions: list[dict[str, Any]] = copy.deepcopy(list(previous.get("conditions") or []))
    ready, phase = compute_ready(obs)
    set_condition(conditions, now, ready, obs.generation)
    if obs.placed is not None:
        set_condition(conditions, now, obs.placed, obs.generation)
    status: dict[str, Any] = {
        **previous,
        "observedGeneration": obs.generation,
        "phase": phase.value,
        "conditions": conditions,
        "replicas": obs.deployment.replicas if obs.deployment else 0,
        "readyReplicas": obs.deployment.ready_replicas if obs.deployment else 0,
        "selector": obs.selector,
        "endpoint": obs.endpoint,
    }
    if obs.shard_plan is not None:
        status["shardPlan"] = shard_plan_status(obs.shard_plan)
    if obs.placed is not None or obs.placement:
        status["placement"] = list(obs.placement)
    return status


def compute_events(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(type, reason, message) Events for transitions users care about; none on idle reconciles."""
    events = []
    for type_ in (PLACED, READY):
        before = find_condition(list(previous.get("conditions") or []), type_)
        after = find_condition(list(current.get("conditions") or []), type_)
        if after is None:
            continue
        key = (after["status"], after["reason"])
        if before is not None and (before.get("status"), before.get("reason")) == key:
            continue
        progressing = after["status"] == "True" or after["reason"] in ("Deploying", "RollingOut")
        events.append(("Normal" if progressing else "Warning", after["reason"], after["message"]))
    return events
