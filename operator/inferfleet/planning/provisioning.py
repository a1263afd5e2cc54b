"""Node autoscaling for replica groups that do not fit: one ProvisioningRequest per waiting group.

A group is placed whole or not at all, so a group that does not fit creates no pods, and a node
autoscaler that adds nodes for pending pods never sees it. Where the cluster serves the
ProvisioningRequest API (`autoscaling.x-k8s.io/v1`, cluster-autoscaler with
`--enable-provisioning-requests`), each waiting group asks for all its nodes at once with the
`best-effort-atomic-scale-up` class: a PodTemplate of the group's real pods (its GPUs, product,
tolerations, one pod per node, every pod in one domain of the topology key) and a count.

Semantics followed (cluster-autoscaler's provisioning request support): the request's spec is
immutable, so a changed group (another pod count) gets a new request; `Provisioned=True` means
the nodes exist and are booked for the request's pods for a while (`BookingExpired` after); the
pods that use them carry the `consume-provisioning-request` annotation; `Failed=True` is final
for that request. The group is placed by inferfleet's own planner once the nodes are in the
inventory. The request goes once the group is Ready or no longer wanted; garbage collection
removes it with its InferenceService.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from inferfleet.api import InferenceServiceSpec, PlacedReason, ShardPlan
from inferfleet.planning.children import Owner, owner_reference
from inferfleet.planning.conditions import find_true_condition
from inferfleet.planning.groups import (
    build_group_statefulset,
    group_name,
    group_selector,
)
from inferfleet.planning.names import HOSTNAME_LABEL, MANAGED_BY, REPLICA_LABEL, SERVICE_LABEL
from inferfleet.planning.placement import GroupPlacement, Shortfall

API_GROUP = "autoscaling.x-k8s.io"
API_VERSION = "v1"
PLURAL = "provisioningrequests"
KIND = "ProvisioningRequest"
ATOMIC_CLASS = "best-effort-atomic-scale-up.autoscaling.x-k8s.io"
CONSUME_ANNOTATION = "autoscaling.x-k8s.io/consume-provisioning-request"
CLASS_ANNOTATION = "autoscaling.x-k8s.io/provisioning-class-name"
# Older cluster-autoscaler releases read only these keys; newer ones read both.
LEGACY_CONSUME_ANNOTATION = "cluster-autoscaler.kubernetes.io/consume-provisioning-request"
LEGACY_CLASS_ANNOTATION = "cluster-autoscaler.kubernetes.io/provisioning-class-name"
RETRY_FAILED_AFTER = timedelta(minutes=5)
"""A Failed request is final; a new one asks again this long after it failed."""


class RequestState(StrEnum):
    PENDING = "Pending"
    PROVISIONED = "Provisioned"
    FAILED = "Failed"
    BOOKING_EXPIRED = "BookingExpired"


@dataclass(frozen=True)
class ObservedRequest:
    """One of a service's ProvisioningRequests, as watched."""

    name: str
    replica: int
    count: int
    state: RequestState
    message: str = ""
    """The autoscaler's words: its reason and message of the deciding condition."""
    since: datetime | None = None
    """When the deciding condition last changed."""
    owner_uid: str = ""
    uid: str = ""


def _words(condition: Mapping[str, Any] | None) -> str:
    if condition is None:
        return ""
    reason, message = condition.get("reason") or "", condition.get("message") or ""
    return f"{reason}: {message}" if reason and message else reason or message


def build_observed_request(body: Mapping[str, Any]) -> ObservedRequest | None:
    """A ProvisioningRequest this operator made (labelled with its service and replica)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    replica = str(labels.get(REPLICA_LABEL, ""))
    if SERVICE_LABEL not in labels or not replica.isdigit():
        return None
    pod_sets = (body.get("spec") or {}).get("podSets") or []
    conditions = (body.get("status") or {}).get("conditions") or []
    state, deciding = RequestState.PENDING, None
    for candidate in (RequestState.FAILED, RequestState.BOOKING_EXPIRED, RequestState.PROVISIONED):
        deciding = find_true_condition(conditions, candidate.value)
        if deciding is not None:
            state = candidate
            break
    if deciding is None:  # Provisioned=False says why the autoscaler has not provided yet
        deciding = next((c for c in conditions if c.get("type") == RequestState.PROVISIONED.value), None)
    since = (deciding or {}).get("lastTransitionTime")
    owners = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
    return ObservedRequest(
        name=str(meta.get("name", "")),
        replica=int(replica),
        count=sum(int(p.get("count") or 0) for p in pod_sets),
        state=state,
        message=_words(deciding),
        since=datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None,
        owner_uid=str(owners[0].get("uid", "")) if owners else "",
        uid=str(meta.get("uid", "")),
    )


def request_name(service: str, replica: int) -> str:
    """The request (and its PodTemplate) of a group is named like the group: one per group."""
    return group_name(service, replica)


def _request_affinity(service: str, replica: int, topology_key: str) -> dict[str, Any]:
    """One pod per node, all pods in one domain of `topology_key`: what the autoscaler simulates
    (the nodes do not exist yet, so the group's own node list cannot be named)."""
    selector = {"matchLabels": group_selector(service, replica)}
    return {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": selector, "topologyKey": topology_key}
            ]
        },
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": selector, "topologyKey": HOSTNAME_LABEL}
            ]
        },
    }


def _labels(service: str, replica: int) -> dict[str, str]:
    return {SERVICE_LABEL: service, REPLICA_LABEL: str(replica), **MANAGED_BY}


def build_pod_template(
    owner: Owner, spec: InferenceServiceSpec, shards: ShardPlan, replica: int
) -> dict[str, Any]:
    """The PodTemplate a group's request references: the group's real pod, without its nodes."""
    group = build_group_statefulset(owner, spec, shards, replica, GroupPlacement(domain="", nodes=()))
    template = group["spec"]["template"]
    pod = dict(template["spec"])
    pod["affinity"] = _request_affinity(owner.name, replica, spec.sharding.topology_key)
    return {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {
            "name": request_name(owner.name, replica),
            "namespace": owner.namespace,
            "labels": _labels(owner.name, replica),
            "ownerReferences": [owner_reference(owner)],
        },
        "template": {"metadata": {"labels": dict(template["metadata"]["labels"])}, "spec": pod},
    }


def build_provisioning_request(owner: Owner, replica: int, pods: int) -> dict[str, Any]:
    """All `pods` of the group or none: the atomic class, one pod set of the group's template."""
    name = request_name(owner.name, replica)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": _labels(owner.name, replica),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "provisioningClassName": ATOMIC_CLASS,
            "podSets": [{"podTemplateRef": {"name": name}, "count": pods}],
        },
    }


@dataclass(frozen=True)
class ProvisioningNote:
    """What a waiting group's status says about its nodes."""

    reason: PlacedReason
    message: str


@dataclass(frozen=True)
class ProvisioningPlan:
    create: tuple[int, ...] = ()
    """Replicas whose request (and PodTemplate) to create."""
    delete: tuple[ObservedRequest, ...] = ()
    """Requests (and their PodTemplates) to delete."""
    notes: Mapping[int, ProvisioningNote] = field(default_factory=dict)
    recheck_at: datetime | None = None
    """When a Failed request may be asked again."""


@dataclass(frozen=True)
class ProvisioningInputs:
    """What deciding a service's requests needs, besides its plan."""

    served: bool
    """The cluster serves ProvisioningRequests (autoscaling.x-k8s.io/v1)."""
    requests: Sequence[ObservedRequest] = ()
    ready_groups: Collection[int] = ()
    """Replicas whose group exists and is Ready."""
    now: datetime | None = None


NOT_SERVED = (
    "waiting for capacity: this cluster serves no ProvisioningRequest API (autoscaling.x-k8s.io/v1), "
    "so no node autoscaler is asked for these nodes"
)


def _note(request: ObservedRequest, pods: int, retry_at: datetime | None) -> ProvisioningNote:
    name = f"ProvisioningRequest {request.name}"
    if request.state == RequestState.FAILED:
        when = f"; asking again at {retry_at.isoformat(timespec='seconds')}" if retry_at else ""
        said = request.message or "no message"
        return ProvisioningNote(
            PlacedReason.NODES_UNAVAILABLE,
            f"the node autoscaler cannot provide them: {name} Failed ({said}){when}",
        )
    if request.state == RequestState.PROVISIONED:
        message = f"{name} is Provisioned; the group is placed once its nodes are in the inventory"
        return ProvisioningNote(PlacedReason.WAITING_FOR_NODES, message)
    said = f" ({request.message})" if request.message else ""
    return ProvisioningNote(
        PlacedReason.WAITING_FOR_NODES,
        f"waiting for nodes: {name} asks the node autoscaler for {pods} nodes at once{said}",
    )


def _decide_waiting(
    request: ObservedRequest, pods: int, now: datetime | None
) -> tuple[bool, ProvisioningNote | None, datetime | None]:
    """For a request of a group still waiting: (delete it, its note, when to look again)."""
    if request.count != pods or request.state == RequestState.BOOKING_EXPIRED:
        return True, None, None  # another group shape, or nodes it brought went unused: ask anew
    if request.state != RequestState.FAILED:
        return False, _note(request, pods, None), None
    retry_at = (request.since or now or datetime.min) + RETRY_FAILED_AFTER
    if now is not None and now >= retry_at:
        return True, None, None
    return False, _note(request, pods, retry_at), retry_at


def plan_provisioning(
    shortfalls: Collection[int],
    placed: Collection[int],
    pods: int,
    inputs: ProvisioningInputs,
) -> ProvisioningPlan:
    """Which requests to create and delete for a service whose groups of `pods` pods are
    `placed` or waiting (`shortfalls`: not placed for lack of capacity, none when the plan is
    blocked), and what each waiting group's status says."""
    if not inputs.served:
        return ProvisioningPlan(
            notes={r: ProvisioningNote(PlacedReason.INSUFFICIENT_CAPACITY, NOT_SERVED) for r in shortfalls}
        )
    delete: list[ObservedRequest] = []
    notes: dict[int, ProvisioningNote] = {}
    rechecks: list[datetime] = []
    asked: set[int] = set()
    for request in sorted(inputs.requests, key=lambda r: (r.replica, r.name)):
        asked.add(request.replica)
        if request.replica in shortfalls:
            gone, note, recheck = _decide_waiting(request, pods, inputs.now)
            if gone:
                delete.append(request)
            if note is not None:
                notes[request.replica] = note
            rechecks += [recheck] if recheck else []
        elif not (
            request.replica in placed
            and request.replica not in inputs.ready_groups
            and request.state == RequestState.PROVISIONED
        ):  # booked nodes are kept until the group placed on them is Ready
            delete.append(request)
    create = tuple(sorted(r for r in shortfalls if r not in asked))
    for replica in create:
        notes[replica] = ProvisioningNote(
            PlacedReason.WAITING_FOR_NODES,
            f"waiting for nodes: asking the node autoscaler for {pods} nodes at once",
        )
    return ProvisioningPlan(create, tuple(delete), notes, min(rechecks, default=None))


def compute_consumers(
    requests: Sequence[ObservedRequest], existing: Collection[int], consuming: Mapping[int, str]
) -> dict[int, str]:
    """The request each group's pods consume, by replica: a new group placed on the nodes of a
    Provisioned request, and a group created so (its pod template must not change: that would
    restart the group)."""
    new = {
        r.replica: r.name
        for r in requests
        if r.state == RequestState.PROVISIONED and r.replica not in existing
    }
    return {**new, **consuming}


def build_consuming_children(
    children: Sequence[dict[str, Any]], consumers: Mapping[int, str]
) -> list[dict[str, Any]]:
    """The plan's children, the pods of consuming groups annotated with their request."""
    out = []
    for child in children:
        replica = str(child["metadata"].get("labels", {}).get(REPLICA_LABEL, ""))
        if child["kind"] != "StatefulSet" or not replica.isdigit() or int(replica) not in consumers:
            out.append(child)
            continue
        name = consumers[int(replica)]
        template = child["spec"]["template"]
        annotations = {
            **template["metadata"].get("annotations", {}),
            CONSUME_ANNOTATION: name,
            CLASS_ANNOTATION: ATOMIC_CLASS,
            LEGACY_CONSUME_ANNOTATION: name,
            LEGACY_CLASS_ANNOTATION: ATOMIC_CLASS,
        }
        metadata = {**template["metadata"], "annotations": annotations}
        out.append({**child, "spec": {**child["spec"], "template": {**template, "metadata": metadata}}})
    return out


def build_noted_shortfalls(
    shortfalls: Mapping[int, Shortfall], notes: Mapping[int, ProvisioningNote]
) -> dict[int, Shortfall]:
    """Each waiting group's shortfall, followed by what the node autoscaler was asked and said."""
    return {
        r: replace(s, message=f"{s.message}; {notes[r].message}") if r in notes else s
        for r, s in shortfalls.items()
    }


def consumed_request(template_annotations: Mapping[str, Any]) -> str | None:
    """The request a group's pod template says its pods consume, if any."""
    value = template_annotations.get(CONSUME_ANNOTATION)
    return str(value) if value else None
