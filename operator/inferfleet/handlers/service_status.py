"""Write an InferenceService's status from what one reconcile planned and observed."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.status import InferenceServiceStatus
from inferfleet.handlers.calls import call
from inferfleet.handlers.indexes import ClusterView
from inferfleet.kube.apply import patch_inference_service_status
from inferfleet.kube.events import post_event
from inferfleet.metrics.operator import STATUS_WRITES, record_replicas
from inferfleet.planning.children import Owner, endpoint_url
from inferfleet.planning.names import selector_string
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.service import ServicePlan
from inferfleet.planning.status import (
    Observation,
    ObservedDeployment,
    aggregate_groups,
    build_status,
    compute_model_consistent,
    compute_placed,
    compute_status_events,
    placement_status,
    pod_placement_status,
)
from inferfleet.runtime.state import ServiceState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile of a service planned and observed: the input of its status."""

    body: Mapping[str, Any]
    owner: Owner
    spec: InferenceServiceSpec | None
    plan: ServicePlan
    groups: list[ObservedGroup]
    """The replica groups it keeps (controlled by the service, not deleted by this reconcile)."""
    creation_failures: Mapping[int, str] = field(default_factory=dict)
    """Why the API server refuses pods of groups that lack them, by replica."""
    gateway_url: str | None = None
    """The gateway's base URL when one serves the service (status.endpoint then points there)."""


def build_observation(view: ClusterView, reconciled: Reconciled, state: ServiceState) -> Observation:
    owner, plan, spec = reconciled.owner, reconciled.plan, reconciled.spec
    if plan.multi_node:
        deployment: ObservedDeployment | None = aggregate_groups(
            reconciled.groups, reconciled.creation_failures
        )
        placement = placement_status(reconciled.groups)
    else:
        deployment = state.deployment if plan.children else None
        topology_key = spec.sharding.topology_key if spec else ""
        pods = view.pods_of((owner.namespace, owner.name)) if plan.children else []
        placement = pod_placement_status(pods, view.node_domains(topology_key))
    return Observation(
        generation=int(reconciled.body["metadata"].get("generation") or 0),
        desired_replicas=spec.replicas if spec else 0,
        selector=selector_string(owner.name),
        endpoint=endpoint_url(owner, spec, reconciled.gateway_url) if spec else "",
        blocked=plan.blocked,
        shard_plan=plan.shard_plan,
        deployment=deployment,
        placed=compute_placed(plan),
        placement=placement,
        apply_error=state.apply_error,
        model=plan.model,
        model_consistent=compute_model_consistent(plan),
    )


def write_status(
    api: client.ApiClient, view: ClusterView, reconciled: Reconciled, state: ServiceState
) -> None:
    """Write the status computed from the newest observations, if it changed (call with the
    state's lock held); post an Event per transition a user cares about."""
    state.take_offered()
    previous = InferenceServiceStatus.read(state.written_status or reconciled.body.get("status") or {})
    observation = build_observation(view, reconciled, state)
    status = build_status(observation, previous, datetime.now(UTC))
    owner = reconciled.owner
    record_replicas(owner.namespace, owner.name, observation.desired_replicas, status.ready_replicas or 0)
    if status == previous:
        return  # nothing changed: no write
    written = status.dump()
    before = previous.dump()
    changed = sorted(k for k in written.keys() | before.keys() if written.get(k) != before.get(k))
    log.debug(f"status of {owner.namespace}/{owner.name}: {status.phase}; changed {', '.join(changed)}")
    call(
        f"writing status of {owner.name}",
        patch_inference_service_status, api, owner.namespace, owner.name, written,
    )  # fmt: skip
    state.written_status = written
    STATUS_WRITES.inc()
    for kind, reason, message in compute_status_events(previous, status):
        # An Event is best effort; the status is written.
        try:
            post_event(api, reconciled.body, kind, reason, message)
        except ApiException as e:
            log.warning(f"posting Event {reason} for {owner.namespace}/{owner.name}: {e.status} {e.reason}")
