"""Reconcile InferenceServices: parse -> observe -> plan -> apply -> status.

Triggers: the InferenceService itself (create, spec update, operator resume), its Deployment
(status changes, hand edits and deletion are seen as watch events), and node events for
services waiting for GPUs. Observations come from kopf indexes, never a LIST per reconcile.
No finalizer: owner references let the garbage collector delete the children.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from inferfleet.api import GROUP, PLURAL, VERSION, InferenceServiceSpec
from inferfleet.handlers.state import ServiceState, forget_service, service_state
from inferfleet.kube.apply import apply_object, patch_inference_service_status
from inferfleet.planning.children import Owner, endpoint_url
from inferfleet.planning.inventory import GpuNode, build_gpu_node, summarize_products
from inferfleet.planning.names import SERVICE_LABEL, selector_string
from inferfleet.planning.service import Blocked, ServicePlan, plan_service
from inferfleet.planning.status import Observation, ObservedDeployment, compute_events, compute_status

WAITING_REASONS = frozenset({"NoMatchingNodes", "UnknownGpuMemory", "ModelDoesNotFit"})


@kopf.index(GROUP, VERSION, PLURAL)
def inference_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], Any]:
    snapshot = {
        "apiVersion": body["apiVersion"],
        "kind": body["kind"],
        "metadata": dict(body.metadata),
        "spec": dict(body.spec),
        "status": dict(body.status),
    }
    return {(namespace, name): snapshot}


@kopf.index("apps", "v1", "deployments", labels={SERVICE_LABEL: kopf.PRESENT})
def engine_deployments(namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[SERVICE_LABEL]): ObservedDeployment.from_object(body)}


@kopf.index("", "v1", "nodes")
def gpu_nodes(body: kopf.Body, **_: Any) -> dict[str, GpuNode] | None:
    node = build_gpu_node(body)
    return {node.name: node} if node else None


def _latest(index: kopf.Index[Any, Any], key: Any) -> Any | None:
    for value in index.get(key, []):
        return value
    return None


def _owner(meta: Any) -> Owner:
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def _plan(
    owner: Owner, raw_spec: Any, gpu_nodes: kopf.Index[str, GpuNode]
) -> tuple[ServicePlan, InferenceServiceSpec | None]:
    try:
        spec = InferenceServiceSpec.model_validate(dict(raw_spec))
    except ValidationError as e:
        errors = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return ServicePlan(blocked=Blocked("InvalidSpec", f"spec rejected: {errors}")), None
    nodes = [node for _, values in gpu_nodes.items() for node in values]
    return plan_service(owner, spec, summarize_products(nodes)), spec


def _apply_children(api: Any, owner: Owner, plan: ServicePlan, state: ServiceState) -> None:
    for obj in plan.children:
        try:
            applied = apply_object(api, obj)
        except ApiException as e:
            if e.status in (400, 403, 422):
                raise kopf.PermanentError(
                    f"applying {obj['kind']} {owner.name} was refused: {e.reason}"
                ) from e
            raise kopf.TemporaryError(
                f"applying {obj['kind']} {owner.name}: {e.status} {e.reason}", delay=5
            ) from e
        if applied["kind"] == "Deployment":
            state.observe_deployment(applied)
            state.applied_generation = ObservedDeployment.from_object(applied).generation


def _write_status(
    api: Any,
    body: Any,
    owner: Owner,
    plan: ServicePlan,
    spec: InferenceServiceSpec | None,
    state: ServiceState,
) -> None:
    """Write the status computed from the newest observations (call with the state's lock held)."""
    previous = state.written_status or dict(body.get("status") or {})
    observation = Observation(
        generation=int(body["metadata"].get("generation") or 0),
        desired_replicas=spec.replicas if spec else 0,
        selector=selector_string(owner.name),
        endpoint=endpoint_url(owner, spec) if spec else "",
        blocked=plan.blocked,
        shard_plan=plan.shard_plan,
        deployment=state.deployment if plan.children else None,
    )
    status = compute_status(observation, previous, datetime.now(UTC))
    if status == previous:
        return  # nothing changed: no write
    patch_inference_service_status(api, owner.namespace, owner.name, status)
    state.written_status = status
    for kind, reason, message in compute_events(previous, status):
        kopf.event(body, type=kind, reason=reason, message=message)


def reconcile(api: Any, body: Any, gpu_nodes: kopf.Index[str, GpuNode], logger: Any) -> None:
    owner = _owner(body["metadata"])
    state = service_state((owner.namespace, owner.name))
    plan, spec = _plan(owner, body["spec"], gpu_nodes)
    if plan.blocked:
        logger.info(f"not deployable: {plan.blocked.reason}: {plan.blocked.message}")
    with state.lock:
        _apply_children(api, owner, plan, state)
        _write_status(api, body, owner, plan, spec, state)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_change_inferenceservice(
    body: kopf.Body, memo: kopf.Memo, gpu_nodes: kopf.Index[str, GpuNode], logger: kopf.Logger, **_: Any
) -> None:
    reconcile(memo.api, body, gpu_nodes, logger)


def _waiting_for_capacity(snapshot: Any) -> bool:
    conditions = (snapshot.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c.get("type") == "Ready"), None)
    return ready is not None and ready.get("reason") in WAITING_REASONS


@kopf.on.event("", "v1", "nodes")
def on_event_node(
    memo: kopf.Memo,
    gpu_nodes: kopf.Index[str, GpuNode],
    inference_services: kopf.Index[Any, Any],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Retry services waiting for GPUs when the cluster's GPU products change (not on heartbeats).

    Event-driven instead of a kopf timer: timers put a finalizer on every InferenceService.
    """
    products = summarize_products(node for _, values in gpu_nodes.items() for node in values)
    if products == memo.get("gpu_products"):
        return
    memo["gpu_products"] = products
    for key in list(inference_services):
        snapshot = _latest(inference_services, key)
        if snapshot is not None and _waiting_for_capacity(snapshot):
            reconcile(memo.api, snapshot, gpu_nodes, logger)


@kopf.on.event("apps", "v1", "deployments", labels={SERVICE_LABEL: kopf.PRESENT})
def on_event_deployment(
    type: str,
    body: kopf.Body,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    inference_services: kopf.Index[Any, Any],
    gpu_nodes: kopf.Index[str, GpuNode],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    key = (namespace, labels[SERVICE_LABEL])
    owner_body = _latest(inference_services, key)
    if owner_body is None or owner_body["metadata"].get("deletionTimestamp"):
        forget_service(key)
        return  # the owner is gone or going: garbage collection removes the rest
    state = service_state(key)
    with state.lock:
        state.observe_deployment(body, deleted=type == "DELETED")
        edited = ObservedDeployment.from_object(body).generation != state.applied_generation
    if type == "DELETED" or (state.applied_generation is not None and edited):
        logger.info(f"Deployment {key[1]} was {'deleted' if type == 'DELETED' else 'edited'}; restoring it")
        reconcile(memo.api, owner_body, gpu_nodes, logger)
        return
    owner = _owner(owner_body["metadata"])
    plan, spec = _plan(owner, owner_body["spec"], gpu_nodes)
    with state.lock:
        _write_status(memo.api, owner_body, owner, plan, spec, state)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)  # optional: no finalizer is added for it
def on_delete_inferenceservice(namespace: str, name: str, **_: Any) -> None:
    forget_service((namespace, name))
