"""The one reconcile of an InferenceService key: parse -> observe -> plan -> apply -> status.

Every trigger reaches this module as a key on the runtime's work queue (handlers/watches.py);
`work` runs one key. Observations come from kopf indexes (the ClusterView), never a LIST per
reconcile. No finalizer: owner references let the garbage collector delete the children.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.resource import NAME_MAKES_VALID_CHILDREN, is_valid_service_name
from inferfleet.api.status import EventReason, PlacedReason, ReadyReason
from inferfleet.handlers.calls import ApplyError, call
from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.handlers.inference_pools import apply_inference_pool, plan_with_inference_pool
from inferfleet.handlers.logs import service_logger
from inferfleet.handlers.provisioning import reconcile_provisioning
from inferfleet.handlers.service_status import Reconciled, write_status
from inferfleet.handlers.weights import build_cached_plan, reconcile_weights
from inferfleet.kube.apply import NameConflictError, apply_child, delete_group
from inferfleet.kube.events import latest_failed_create, post_event
from inferfleet.metrics.operator import PLACEMENT_FAILURES, track_reconcile
from inferfleet.planning.children import Owner
from inferfleet.planning.groups import group_key, group_name
from inferfleet.planning.inference_pool import KIND as POOL_KIND
from inferfleet.planning.inventory import summarize_products
from inferfleet.planning.lost import LostGroups, compute_lost_groups
from inferfleet.planning.model_files import MetadataFetch
from inferfleet.planning.observed import ObservedGroup
from inferfleet.planning.placement import GroupPlacement
from inferfleet.planning.requeue import NAME_CONFLICT_RECHECK, compute_requeue_after
from inferfleet.planning.service import METADATA_REASONS, Blocked, GroupInputs, ServicePlan, plan_service
from inferfleet.planning.spec_warnings import compute_spec_warnings
from inferfleet.planning.status import ObservedDeployment
from inferfleet.planning.wake import WAITING_REASONS
from inferfleet.planning.weights_cache import (
    compute_fetched_facts,
    compute_metadata_fetch,
    compute_warm_nodes,
)
from inferfleet.planning.weights_naming import compute_cacheable
from inferfleet.planning.weights_observed import CacheObserved
from inferfleet.runtime.operator import OperatorRuntime
from inferfleet.runtime.queue import GONE, STATUS_ONLY, Outcome
from inferfleet.runtime.state import ServiceState

log = logging.getLogger(__name__)

SERVICE_TRIGGER = "inferenceservice"
"""The trigger of the service's own events: created, its spec changed, or listed at startup."""
APPLY_ORDER = {"Service": 0, "PodDisruptionBudget": 1, POOL_KIND: 3}
"""Objects that start nothing go first: a name conflict found there stops the apply before any
engine pod is created for a service that could not be reached. The InferencePool goes last: it is
for other gateways, and nothing of the service waits for it."""


@dataclass(frozen=True)
class Service:
    """The InferenceService being reconciled: its snapshot from the index, parsed once."""

    body: Mapping[str, Any]
    owner: Owner
    parsed: InferenceServiceSpec | Blocked

    @classmethod
    def from_snapshot(cls, body: Mapping[str, Any]) -> Service:
        meta = body["metadata"]
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        return cls(body, owner, parse_spec(owner.name, body.get("spec") or {}))

    @property
    def key(self) -> Key:
        return (self.owner.namespace, self.owner.name)

    @property
    def spec(self) -> InferenceServiceSpec | None:
        return None if isinstance(self.parsed, Blocked) else self.parsed

    @property
    def generation(self) -> int:
        return int(self.body["metadata"].get("generation") or 0)


def parse_spec(name: str, raw_spec: Mapping[str, Any]) -> InferenceServiceSpec | Blocked:
    if not is_valid_service_name(name):  # an object stored before the CRD refused such names
        return Blocked(ReadyReason.INVALID_SPEC, NAME_MAKES_VALID_CHILDREN.message)
    try:
        return InferenceServiceSpec.model_validate(dict(raw_spec))
    except ValidationError as e:
        errors = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return Blocked(ReadyReason.INVALID_SPEC, f"spec rejected: {errors}")


def work(runtime: OperatorRuntime, view: ClusterView, key: Key, trigger: str) -> Outcome:
    """Run one key from the work queue: the service's whole reconcile, or its status only."""
    snapshot = view.service(key)
    if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
        return GONE
    logger = service_logger(snapshot)
    again = None
    if trigger == STATUS_ONLY:
        refresh_status(runtime, view, Service.from_snapshot(snapshot))
    else:
        again = reconcile(runtime, view, Service.from_snapshot(snapshot), logger, trigger)
    # Deleted while it was reconciled: what the reconcile recorded goes too.
    return GONE if view.service(key) is None else Outcome(requeue_after=again)


def reconcile(
    runtime: OperatorRuntime,
    view: ClusterView,
    service: Service,
    logger: logging.LoggerAdapter[Any],
    trigger: str,
) -> float | None:
    """Reconcile one service; returns seconds after which to reconcile it again, if it must."""
    state = runtime.state(service.key, service.owner.uid)
    with state.lock, track_reconcile(trigger):
        now = datetime.now(UTC)
        inventory = runtime.inventory.current()  # before the view is read
        groups = view.groups_of(service.key)
        _warn_about_spec(runtime, service, state)
        lost = _find_lost(runtime, view, service, groups, now, logger)
        plan = build_cached_plan(
            _plan(runtime, view, service, lost.groups, now), service.spec, runtime.config.model_cache
        )
        asked = reconcile_provisioning(
            runtime.api, runtime.provisioning_served, view, service.owner, service.spec, plan, groups, now
        )
        plan = plan_with_inference_pool(runtime, service.owner.name, asked.plan)
        if plan.blocked:
            logger.info(f"not deployable: {plan.blocked.reason}: {plan.blocked.message}")
        if plan.shortfalls:
            PLACEMENT_FAILURES.labels(PlacedReason.INSUFFICIENT_CAPACITY).inc(len(plan.shortfalls))
        gone = {g.replica for g in lost.groups} | set(plan.surplus_groups)
        _delete_groups(runtime, service, sorted(gone, reverse=True), groups, state)
        remaining = [g for g in groups if g.replica not in gone]
        failures, unexplained = _creation_failures(runtime, remaining, logger)
        reconciled = Reconciled(
            service.body, service.owner, service.spec, plan, remaining, failures, runtime.config.gateway_url
        )
        weights_error, fetch_retry_at = _reconcile_weights(runtime, view, service, state, now, plan)
        conflict = _apply_and_report(runtime, view, reconciled, state)
        state.reconciled = True
        if conflict:
            return NAME_CONFLICT_RECHECK
        if weights_error is not None:
            raise weights_error  # the work queue retries with backoff
        if trigger == SERVICE_TRIGGER:
            logger.info(f"reconciled generation {service.generation}")
    waiting = bool(plan.shortfalls) or (plan.blocked is not None and plan.blocked.reason in WAITING_REASONS)
    return compute_requeue_after(
        now,
        lost.recheck_at,
        release_in=runtime.refused_nodes.seconds_to_next_release() if plan.shortfalls else None,
        missing_pods_unexplained=unexplained,
        inventory_changed=waiting and runtime.inventory.current() != inventory,
        fetch_retry_at=fetch_retry_at,
        provisioning_recheck_at=asked.recheck_at,
        pool_conflict=state.pool_conflict,
    )


def _apply_and_report(
    runtime: OperatorRuntime, view: ClusterView, reconciled: Reconciled, state: ServiceState
) -> bool:
    """Apply the plan's children and write the status; whether a child's name is taken."""
    try:
        _apply(runtime, reconciled, state)
    except NameConflictError as e:
        state.apply_error = Blocked(ReadyReason.NAME_CONFLICT, str(e))
        write_status(runtime.api, view, reconciled, state)
        return True
    except ApplyError as e:
        state.apply_error = Blocked(ReadyReason.APPLY_FAILED, str(e))
        try:
            write_status(runtime.api, view, reconciled, state)
        except ApplyError as write_error:
            log.warning(f"after a failed apply: {write_error}")
        raise
    state.apply_error = None
    write_status(runtime.api, view, reconciled, state)
    return False


def _reconcile_weights(
    runtime: OperatorRuntime,
    view: ClusterView,
    service: Service,
    state: ServiceState,
    now: datetime,
    plan: ServicePlan,
) -> tuple[ApplyError | None, datetime | None]:
    """The node weights cache's objects and status.weights; a failure does not stop the apply.
    When a failed fetch is due for its retry."""
    metadata = plan.blocked is not None and plan.blocked.reason in METADATA_REASONS
    try:
        retry_at = reconcile_weights(
            runtime.api, runtime.config.model_cache, view, service.body, service.spec, state, now,
            plan.shard_plan, metadata,
        )  # fmt: skip
    except ApplyError as e:
        return e, None
    return None, retry_at


def _find_lost(
    runtime: OperatorRuntime,
    view: ClusterView,
    service: Service,
    groups: list[ObservedGroup],
    now: datetime,
    logger: logging.LoggerAdapter[Any],
) -> LostGroups:
    scheduling = service.spec.scheduling if service.spec else None
    members = view.unschedulable_members(service.key)
    lost = compute_lost_groups(
        service.owner.namespace, groups, scheduling, view.all_nodes(), members, view.all_bound(), now
    )
    runtime.refused_nodes.refuse(lost.refused_nodes)
    for group in lost.lost:
        logger.warning(group.why)
    return lost


def _plan(
    runtime: OperatorRuntime, view: ClusterView, service: Service, lost: list[ObservedGroup], now: datetime
) -> ServicePlan:
    if service.spec is None:
        assert isinstance(service.parsed, Blocked)
        return ServicePlan(blocked=service.parsed)
    lost_keys = frozenset(group_key(g.namespace, g.service, g.replica) for g in lost)
    existing = {
        g.replica: GroupPlacement(domain=g.domain, nodes=g.nodes)
        for g in view.groups_of(service.key)
        if group_key(g.namespace, g.service, g.replica) not in lost_keys
    }
    observed = _cache_of(runtime, view, service)
    inputs = GroupInputs(
        gpu_nodes=view.all_nodes(),
        bound=[p for p in view.all_bound() if p.group not in lost_keys],
        reservations=view.reservations(exclude=lost_keys),
        existing=existing,
        refused=runtime.refused_nodes.current(),
        warm=compute_warm_nodes(observed.fetches, service.spec.model.source),
    )
    products = summarize_products(view.all_nodes(), service.spec.scheduling)
    facts = compute_fetched_facts(observed, service.spec.model.source)
    metadata = _metadata_of(runtime, observed, service.spec, now)
    return plan_service(
        service.owner, service.spec, products, inputs, view.scheduler_name, view.policy, facts, metadata
    )


def _metadata_of(
    runtime: OperatorRuntime, observed: CacheObserved, spec: InferenceServiceSpec, now: datetime
) -> MetadataFetch | None:
    """How reading the model's facts without its weights goes; None when the cache cannot."""
    if runtime.config.model_cache is None or not compute_cacheable(spec.model.source):
        return None
    return compute_metadata_fetch(observed, spec.model.source, now)


def _cache_of(runtime: OperatorRuntime, view: ClusterView, service: Service) -> CacheObserved:
    """The service's namespace's weights cache as watched; empty when the cache is off."""
    cache = runtime.config.model_cache
    return view.cache_of(service.owner.namespace, cache.namespace) if cache else CacheObserved()


def _apply(runtime: OperatorRuntime, reconciled: Reconciled, state: ServiceState) -> None:
    state.pool_conflict = False
    if not any(obj["kind"] == POOL_KIND for obj in reconciled.plan.children):
        state.forget_child(POOL_KIND, reconciled.owner.name)  # its API gone: the name may be another's next
    for group in reconciled.groups:  # controlled by this service (the index says so): no create needed
        state.children.setdefault(("StatefulSet", group_name(group.service, group.replica)), group.uid)
    for obj in sorted(reconciled.plan.children, key=lambda o: APPLY_ORDER.get(o["kind"], 2)):
        if obj["kind"] == POOL_KIND:
            state.pool_conflict = not apply_inference_pool(runtime, reconciled.body, state, obj)
            continue
        known = (obj["kind"], obj["metadata"]["name"]) in state.children
        what = f"applying {obj['kind']} {obj['metadata']['name']}"
        applied = call(what, apply_child, runtime.api, obj, reconciled.owner.uid, known)
        state.know_child(applied)
        if applied["kind"] == "Deployment":
            state.observe_deployment(applied)
            state.applied_generation = ObservedDeployment.from_object(applied).generation


def _creation_failures(
    runtime: OperatorRuntime, groups: list[ObservedGroup], logger: logging.LoggerAdapter[Any]
) -> tuple[dict[int, str], bool]:
    """Why the API server refuses pods of replica groups that lack them, by replica, and
    whether a group lacks pods for a reason not yet posted."""
    failures: dict[int, str] = {}
    unexplained = False
    for group in groups:
        if not group.pods_missing:
            continue
        try:
            message = latest_failed_create(runtime.api, group.namespace, group.uid)
        except ApiException as e:
            logger.warning(f"reading Events of replica group {group.replica}: {e.status} {e.reason}")
            message = None
        if message is None:
            unexplained = True
        else:
            failures[group.replica] = message
    return failures, unexplained


def _warn_about_spec(runtime: OperatorRuntime, service: Service, state: ServiceState) -> None:
    """A Warning Event per thing in the spec that works but should not be there (a literal
    secret), once per generation."""
    if service.spec is None or state.warned_generation == service.generation:
        return
    for message in compute_spec_warnings(service.spec):
        try:
            post_event(runtime.api, service.body, "Warning", EventReason.LITERAL_SECRET_IN_SPEC, message)
        except ApiException as e:
            log.warning(f"posting a spec warning for {service.owner.name}: {e.status} {e.reason}")
    state.warned_generation = service.generation


def _delete_groups(
    runtime: OperatorRuntime,
    service: Service,
    replicas: list[int],
    groups: list[ObservedGroup],
    state: ServiceState,
) -> None:
    """Delete replica groups this service controls (the groups are the index's controlled ones)."""
    owner = service.owner
    known = dict(state.children)
    known.update({("StatefulSet", group_name(g.service, g.replica)): g.uid for g in groups})
    for replica in replicas:
        call(
            f"deleting replica group {replica}",
            delete_group, runtime.api, owner.namespace, owner.name, replica, owner.uid, known,
        )  # fmt: skip
        for kind in ("StatefulSet", "Service"):
            state.forget_child(kind, group_name(owner.name, replica))


def refresh_status(runtime: OperatorRuntime, view: ClusterView, service: Service) -> None:
    """A child's status changed: write the service's status from the newest observations, apply nothing."""
    state = runtime.state(service.key, service.owner.uid)
    if service.spec is None or not state.reconciled:
        return
    products = summarize_products(view.all_nodes(), service.spec.scheduling)
    observed = _cache_of(runtime, view, service)
    facts = compute_fetched_facts(observed, service.spec.model.source)
    metadata = _metadata_of(runtime, observed, service.spec, datetime.now(UTC))
    plan = plan_service(
        service.owner, service.spec, products, policy=view.policy, model_files=facts, metadata=metadata
    )
    with state.lock:
        write_status(
            runtime.api,
            view,
            Reconciled(
                service.body, service.owner, service.spec, plan, [], gateway_url=runtime.config.gateway_url
            ),
            state,
        )
