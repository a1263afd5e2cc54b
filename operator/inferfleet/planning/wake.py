"""Which services a node or pod event wakes: the decisions behind the watches' keys.

A watch event only says "look at these services again"; these functions say which ones, from
the event and the indexed view, so the handlers only map events to keys and run IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from inferfleet.api import SchedulingSpec
from inferfleet.api.status import ReadyReason
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.stuck import is_unschedulable

Key = tuple[str, str]

DELETED = "DELETED"
WAITING_REASONS = frozenset(
    {
        ReadyReason.NO_MATCHING_NODES,
        ReadyReason.UNKNOWN_GPU_MEMORY,
        ReadyReason.MODEL_DOES_NOT_FIT,
        ReadyReason.INSUFFICIENT_CAPACITY,
        ReadyReason.WAITING_FOR_NODES,
        ReadyReason.NODES_UNAVAILABLE,
    }
)
"""Condition reasons of a service that waits for GPUs: an inventory change may let it place."""


def build_scheduling(spec: Mapping[str, Any] | None) -> SchedulingSpec | None:
    """A service's scheduling spec from its raw spec; None when it does not parse (the reconcile
    reports why)."""
    try:
        return SchedulingSpec.model_validate((spec or {}).get("scheduling") or {})
    except ValidationError:
        return None


def compute_waiting(status: Mapping[str, Any] | None) -> bool:
    """Whether a service with this status waits for GPUs."""
    conditions = (status or {}).get("conditions") or []
    return any(c.get("status") == "False" and c.get("reason") in WAITING_REASONS for c in conditions)


def compute_waiting_services(statuses: Mapping[Key, Mapping[str, Any] | None]) -> list[Key]:
    """The live services (by their newest status) that a freed or added GPU may let place."""
    return [key for key, status in statuses.items() if compute_waiting(status)]


def compute_node_wakes(
    event_type: str | None,
    node_name: str,
    node: GpuNode | None,
    groups: Iterable[ObservedGroup],
    specs: Mapping[Key, Mapping[str, Any]],
) -> list[Key]:
    """Services with a group on a node that is gone, or no longer takes that service's pods
    (NotReady, cordoned, a taint it does not tolerate): their groups restart elsewhere.

    `specs` holds the live services' raw specs; a taint a service tolerates keeps its group (no
    reconcile per heartbeat)."""
    if event_type != DELETED and node is not None and node.schedulable:
        return []
    keys: list[Key] = []
    for group in groups:
        key = (group.namespace, group.service)
        if node_name not in group.nodes or key not in specs or key in keys:
            continue
        if event_type != DELETED and node is not None and node.accepts(build_scheduling(specs[key])):
            continue
        keys.append(key)
    return keys


def compute_node_lost(event_type: str | None, node_name: str, lost_nodes: Iterable[str]) -> bool:
    """Whether the node's single-pod replicas are replaced now (gone or NotReady; a cordoned node
    is not lost: its pods serve until a drain evicts them)."""
    return event_type == DELETED or node_name in set(lost_nodes)


@dataclass(frozen=True)
class PodWake:
    reconcile: Key | None = None
    """A group member the scheduler refused: its service looks at the group again."""
    frees_gpus: bool = False
    """A bound pod went away: services waiting for GPUs try again."""
    member_gone: tuple[Key, int] | None = None
    """A group member went away: its group restarts whole (ranks cannot rejoin)."""
    status_of: Key | None = None
    """A single-pod replica's pod changed: its service's status (placement, readiness) is computed
    again. The pod index may lag the Deployment event that asked for it, so the pod's own event
    must ask too. Groups' status comes from their StatefulSets, whose events reconcile."""


def compute_pod_wake(
    event_type: str | None,
    namespace: str,
    labels: Mapping[str, str],
    spec: Mapping[str, Any] | None,
    status: Mapping[str, Any] | None,
) -> PodWake:
    service, replica = labels.get(SERVICE_LABEL), str(labels.get(REPLICA_LABEL, ""))
    member = bool(service) and REPLICA_LABEL in labels
    status_of = (namespace, str(service)) if service and not member else None
    if event_type != DELETED:
        refused = member and is_unschedulable(spec, status)
        return PodWake(reconcile=(namespace, str(service)) if refused else None, status_of=status_of)
    gone = ((namespace, str(service)), int(replica)) if member and replica.isdigit() else None
    return PodWake(frees_gpus=bool((spec or {}).get("nodeName")), member_gone=gone, status_of=status_of)
