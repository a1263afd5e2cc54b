"""Node autoscaling in the reconcile: a waiting replica group asks for its nodes, all at once.

Called from the one reconcile with the service's plan: creates and deletes the service's
ProvisioningRequests (the decisions are in planning/provisioning.py), and returns the plan with
the waiting groups' shortfalls saying what the node autoscaler was asked and answered, and the
pods of groups placed on provisioned nodes annotated as consuming their request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from kubernetes import client

from inferfleet.api import InferenceServiceSpec
from inferfleet.handlers.calls import ApplyError, call
from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.kube.provisioning import (
    create_provisioning_request,
    delete_provisioning_request,
    is_provisioning_served,
)
from inferfleet.planning.children import Owner
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.provisioning import (
    ProvisioningInputs,
    build_consuming_children,
    build_noted_shortfalls,
    build_pod_template,
    build_provisioning_request,
    compute_consumers,
    plan_provisioning,
)
from inferfleet.planning.service import ServicePlan
from inferfleet.runtime.answer import CachedAnswer

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR = timedelta(seconds=30)
"""A refused or failed call about requests is tried again this soon; the children are applied anyway."""


@dataclass(frozen=True)
class Provisioned:
    plan: ServicePlan
    recheck_at: datetime | None = None


def reconcile_provisioning(
    api: client.ApiClient,
    discovery: CachedAnswer,
    view: ClusterView,
    owner: Owner,
    spec: InferenceServiceSpec | None,
    plan: ServicePlan,
    groups: list[ObservedGroup],
    now: datetime,
) -> Provisioned:
    """The service's requests made and deleted; its plan as applied and reported. A failed call
    does not stop the reconcile: the plan is applied unchanged and tried again soon."""
    try:
        return _reconcile(api, discovery, view, owner, spec, plan, groups, now)
    except ApplyError as e:
        log.warning(f"{owner.namespace}/{owner.name}: {e}")
        return Provisioned(plan, now + RETRY_AFTER_ERROR)


def _reconcile(
    api: client.ApiClient,
    discovery: CachedAnswer,
    view: ClusterView,
    owner: Owner,
    spec: InferenceServiceSpec | None,
    plan: ServicePlan,
    groups: list[ObservedGroup],
    now: datetime,
) -> Provisioned:
    key: Key = (owner.namespace, owner.name)
    requests = [r for r in view.provisioning_requests_of(key) if r.owner_uid == owner.uid]
    if spec is None or plan.shard_plan is None or not plan.multi_node:
        _delete(api, owner, [(r.name, r.uid) for r in requests])
        return Provisioned(plan)
    shortfalls = () if plan.blocked is not None else tuple(plan.shortfalls)
    served = bool(shortfalls or requests) and discovery.get(
        lambda: call("discovering ProvisioningRequests", is_provisioning_served, api)
    )
    pods = plan.shard_plan.pods_per_replica
    ready = [g.replica for g in groups if g.ready]
    inputs = ProvisioningInputs(served, requests, ready, now)
    decided = plan_provisioning(shortfalls, tuple(plan.placements), pods, inputs)
    _delete(api, owner, [(r.name, r.uid) for r in decided.delete])
    for replica in decided.create:
        template = build_pod_template(owner, spec, plan.shard_plan, replica)
        request = build_provisioning_request(owner, replica, pods)
        if not call(
            f"creating ProvisioningRequest {request['metadata']['name']}",
            create_provisioning_request, api, template, request, owner.uid,
        ):  # fmt: skip
            log.warning(
                f"PodTemplate {template['metadata']['name']} belongs to someone else: no request made"
            )
    consumers = compute_consumers(requests, [g.replica for g in groups], view.consuming_groups_of(key))
    noted = replace(
        plan,
        children=build_consuming_children(plan.children, consumers),
        shortfalls=build_noted_shortfalls(plan.shortfalls, decided.notes),
        placed_reasons={r: n.reason for r, n in decided.notes.items()},
    )
    return Provisioned(noted, decided.recheck_at)


def _delete(api: client.ApiClient, owner: Owner, requests: list[tuple[str, str]]) -> None:
    for name, uid in requests:
        call(
            f"deleting ProvisioningRequest {name}",
            delete_provisioning_request, api, owner.namespace, name, uid, owner.uid,
        )  # fmt: skip
