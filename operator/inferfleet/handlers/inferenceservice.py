"""Reconcile InferenceServices: parse -> observe -> plan -> apply -> status.

Triggers: the InferenceService itself (create, spec update, operator resume), its children
(status changes, hand edits and deletion arrive as watch events), and node and pod events
for services waiting for GPUs or holding a group on a lost node. Observations come from kopf
indexes, never a LIST per reconcile. No finalizer: owner references let the garbage
collector delete the children.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from inferfleet.api import GROUP, PLURAL, VERSION, InferenceServiceSpec, SchedulingSpec
from inferfleet.api.resource import NAME_MAKES_VALID_CHILDREN, is_valid_service_name
from inferfleet.handlers.autoscaler import forget_service as forget_autoscaled_service
from inferfleet.handlers.indexes import ClusterView, Key, unschedulable
from inferfleet.handlers.reconcile_queue import STATUS_ONLY, ReconcileQueue
from inferfleet.handlers.state import (
    GPU_INVENTORY,
    REFUSED_NODES,
    ServiceState,
    forget_service,
    service_state,
)
from inferfleet.kube.apply import (
    NameConflictError,
    api_error_message,
    apply_child,
    delete_group,
    delete_pod,
    patch_inference_service_status,
)
from inferfleet.kube.events import latest_failed_create, post_event
from inferfleet.metrics.operator import (
    PLACEMENT_FAILURES,
    STATUS_WRITES,
    forget_service_metrics,
    record_replicas,
    track_reconcile,
)
from inferfleet.planning.children import Owner, endpoint_url
from inferfleet.planning.groups import group_key, group_name
from inferfleet.planning.inventory import summarize_products
from inferfleet.planning.names import REPLICA_LABEL, SERVICE_LABEL, selector_string
from inferfleet.planning.observed import ObservedGroup, is_controlled_by
from inferfleet.planning.placement import GroupPlacement
from inferfleet.planning.service import Blocked, GroupInputs, ServicePlan, plan_service
from inferfleet.planning.spec_warnings import compute_spec_warnings
from inferfleet.planning.status import (
    Observation,
    ObservedDeployment,
    aggregate_groups,
    compute_events,
    compute_placed,
    compute_status,
    placement_status,
    pod_placement_status,
)
from inferfleet.planning.stuck import compute_stuck_groups

log = logging.getLogger(__name__)

WAITING_REASONS = frozenset(
    {"NoMatchingNodes", "UnknownGpuMemory", "ModelDoesNotFit", "InsufficientCapacity"}
)
NAME_CONFLICT_RECHECK = 60.0
"""Seconds until a service whose child name is taken tries again (the other object is not watched)."""
APPLY_ORDER = {"Service": 0, "PodDisruptionBudget": 1}
"""Objects that start nothing go first: a name conflict found there stops the apply before any
engine pod is created for a service that could not be reached."""
UNEXPLAINED_MISSING_PODS_RECHECK = 15.0
"""Seconds until a group whose StatefulSet lacks pods is looked at again when no FailedCreate
Event says why yet (the controller posts it asynchronously, after the status update that
told us)."""


def _owner(meta: Any) -> Owner:
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def _parse(name: str, raw_spec: Any) -> InferenceServiceSpec | Blocked:
    if not is_valid_service_name(name):  # an object stored before the CRD refused such names
        return Blocked("InvalidSpec", NAME_MAKES_VALID_CHILDREN.message)
    try:
        return InferenceServiceSpec.model_validate(dict(raw_spec))
    except ValidationError as e:
        errors = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return Blocked("InvalidSpec", f"spec rejected: {errors}")


def _lost(
    key: Key,
    groups: list[ObservedGroup],
    spec: InferenceServiceSpec | Blocked,
    view: ClusterView,
    now: datetime,
    logger: Any,
) -> tuple[list[ObservedGroup], datetime | None]:
    """Groups that restart whole and are placed again, and when to look again at members the
    scheduler refused for a reason it may get past by itself (see planning/stuck.py).

    A group is lost when a member's node is gone, NotReady, cordoned or tainted with a taint the
    service does not tolerate, or when the scheduler refused a member its planned node: its GPUs
    were taken by a pod bound after the plan (the plan reserves GPUs only against inferfleet), or
    it kept refusing past the grace."""
    scheduling = None if isinstance(spec, Blocked) else spec.scheduling
    healthy = {node.name for node in view.all_nodes() if node.accepts(scheduling)}
    members = view.unschedulable_members(key)
    stuck = compute_stuck_groups(members, now)
    lost = []
    for group in groups:
        gone = [n for n in group.nodes if n not in healthy]
        refused = [m for m in members if (m.replica, m.group_uid) == (group.replica, group.uid)]
        if gone:
            logger.warning(
                f"replica group {group.replica} lost {gone} (gone, NotReady, cordoned or tainted); "
                "restarting it whole"
            )
        elif (group.replica, group.uid) in stuck.restart:
            # The planned nodes its bound members do not hold refused the others.
            held = {p.node for p in view.all_bound() if p.group == group_key(*key, group.replica)}
            REFUSED_NODES.refuse(set(group.nodes) - held)
            logger.warning(
                f"replica group {group.replica}: the scheduler refused a member its planned node "
                f"({refused[0].message if refused else 'no message'}); restarting it whole elsewhere"
            )
        else:
            continue
        lost.append(group)
    return lost, stuck.recheck_at


def _plan(
    owner: Owner, spec: InferenceServiceSpec | Blocked, view: ClusterView, lost: list[ObservedGroup]
) -> ServicePlan:
    if isinstance(spec, Blocked):
        return ServicePlan(blocked=spec)
    lost_keys = frozenset(group_key(g.namespace, g.service, g.replica) for g in lost)
    existing = {
        g.replica: GroupPlacement(domain=g.domain, nodes=g.nodes)
        for g in view.groups_of((owner.namespace, owner.name))
        if group_key(g.namespace, g.service, g.replica) not in lost_keys
    }
    inputs = GroupInputs(
        gpu_nodes=view.all_nodes(),
        bound=[p for p in view.all_bound() if p.group not in lost_keys],
        reservations=view.reservations(exclude=lost_keys),
        existing=existing,
        refused=REFUSED_NODES.current(),
    )
    products = summarize_products(view.all_nodes(), spec.scheduling)
    return plan_service(owner, spec, products, inputs, view.scheduler_name, view.policy)


def _call(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiException as e:
        # The API server's own message says what to fix; a status code alone does not.
        if e.status in (400, 403, 422):
            raise kopf.PermanentError(f"{what} was refused ({e.status}): {api_error_message(e)}") from e
        raise kopf.TemporaryError(f"{what} failed ({e.status}): {api_error_message(e)}", delay=5) from e


def _apply(
    api: Any, owner: Owner, plan: ServicePlan, state: ServiceState, groups: list[ObservedGroup]
) -> None:
    for group in groups:  # controlled by this service (the index says so): no create needed
        state.children.setdefault(("StatefulSet", group_name(group.service, group.replica)), group.uid)
    for obj in sorted(plan.children, key=lambda o: APPLY_ORDER.get(o["kind"], 2)):
        known = (obj["kind"], obj["metadata"]["name"]) in state.children
        what = f"applying {obj['kind']} {obj['metadata']['name']}"
        applied = _call(what, apply_child, api, obj, owner.uid, known)
        state.know_child(applied)
        if applied["kind"] == "Deployment":
            state.observe_deployment(applied)
            state.applied_generation = ObservedDeployment.from_object(applied).generation


def _creation_failures(api: Any, groups: list[ObservedGroup], logger: Any) -> tuple[dict[int, str], bool]:
    """Why the API server refuses pods of replica groups that lack them, by replica, and
    whether a group lacks pods for a reason not yet posted."""
    failures: dict[int, str] = {}
    unexplained = False
    for group in groups:
        if not group.pods_missing:
            continue
        try:
            message = latest_failed_create(api, group.namespace, group.uid)
        except ApiException as e:
            logger.warning(f"reading Events of replica group {group.replica}: {e.status} {e.reason}")
            message = None
        if message is None:
            unexplained = True
        else:
            failures[group.replica] = message
    return failures, unexplained


def _write_status(
    api: Any,
    body: Any,
    owner: Owner,
    plan: ServicePlan,
    spec: InferenceServiceSpec | None,
    state: ServiceState,
    groups: list[ObservedGroup],
    view: ClusterView,
    creation_failures: Mapping[int, str] | None = None,
) -> None:
    """Write the status computed from the newest observations (call with the state's lock held)."""
    state.take_offered()
    previous = state.written_status or dict(body.get("status") or {})
    if plan.multi_node:
        deployment: ObservedDeployment | None = aggregate_groups(groups, creation_failures)
        placement = placement_status(groups)
    else:
        deployment = state.deployment if plan.children else None
        topology_key = spec.sharding.topology_key if spec else ""
        pods = view.pods_of((owner.namespace, owner.name)) if plan.children else []
        placement = pod_placement_status(pods, view.node_domains(topology_key))
    observation = Observation(
        generation=int(body["metadata"].get("generation") or 0),
        desired_replicas=spec.replicas if spec else 0,
        selector=selector_string(owner.name),
        endpoint=endpoint_url(owner, spec) if spec else "",
        blocked=plan.blocked,
        shard_plan=plan.shard_plan,
        deployment=deployment,
        placed=compute_placed(plan),
        placement=placement,
        apply_error=state.apply_error,
    )
    status = compute_status(observation, previous, datetime.now(UTC))
    record_replicas(owner.namespace, owner.name, observation.desired_replicas, status.get("readyReplicas", 0))
    if status == previous:
        return  # nothing changed: no write
    _call(
        f"writing status of {owner.name}",
        patch_inference_service_status,
        api,
        owner.namespace,
        owner.name,
        status,
    )
    state.written_status = status
    STATUS_WRITES.inc()
    for kind, reason, message in compute_events(previous, status):
        # Our own client, not kopf.event: this also runs in the reconcile queue's threads,
        # outside kopf's handler context. An Event is best effort; the status is written.
        try:
            post_event(api, body, kind, reason, message)
        except ApiException as e:
            log.warning(f"posting Event {reason} for {owner.namespace}/{owner.name}: {e.status} {e.reason}")


def reconcile(api: Any, body: Any, view: ClusterView, logger: Any, trigger: str) -> float | None:
    """Reconcile one service; returns seconds after which to reconcile it again, if it must."""
    owner = _owner(body["metadata"])
    key = (owner.namespace, owner.name)
    state = service_state(key, owner.uid)
    with state.lock, track_reconcile(trigger):
        now = datetime.now(UTC)
        inventory = GPU_INVENTORY.current()  # before the view is read
        groups = view.groups_of(key)
        parsed = _parse(owner.name, body["spec"])
        spec = None if isinstance(parsed, Blocked) else parsed
        _warn_about_spec(api, body, spec, state)
        lost, recheck_at = _lost(key, groups, parsed, view, now, logger)
        plan = _plan(owner, parsed, view, lost)
        if plan.blocked:
            logger.info(f"not deployable: {plan.blocked.reason}: {plan.blocked.message}")
        if plan.shortfalls:
            PLACEMENT_FAILURES.labels("InsufficientCapacity").inc(len(plan.shortfalls))
        gone = {g.replica for g in lost} | set(plan.surplus_groups)
        _delete_groups(api, owner, sorted(gone, reverse=True), groups, state)
        remaining = [g for g in groups if g.replica not in gone]
        failures, unexplained = _creation_failures(api, remaining, logger)
        try:
            _apply(api, owner, plan, state, remaining)
        except NameConflictError as e:
            state.apply_error = Blocked("NameConflict", str(e))
            _write_status(api, body, owner, plan, spec, state, remaining, view, failures)
            return NAME_CONFLICT_RECHECK
        except (kopf.TemporaryError, kopf.PermanentError) as e:
            state.apply_error = Blocked("ApplyFailed", str(e))
            with contextlib.suppress(kopf.TemporaryError, kopf.PermanentError):
                _write_status(api, body, owner, plan, spec, state, remaining, view, failures)
            raise
        state.apply_error = None
        _write_status(api, body, owner, plan, spec, state, remaining, view, failures)
        state.reconciled = (owner.uid, int(body["metadata"].get("generation") or 0))
    waiting = bool(plan.shortfalls) or (plan.blocked is not None and plan.blocked.reason in WAITING_REASONS)
    return _recheck_after(
        now,
        recheck_at,
        waiting_on_refused=bool(plan.shortfalls),
        missing_pods_unexplained=unexplained,
        inventory_changed=waiting and GPU_INVENTORY.current() != inventory,
    )


def _warn_about_spec(api: Any, body: Any, spec: InferenceServiceSpec | None, state: ServiceState) -> None:
    """A Warning Event per thing in the spec that works but should not be there (a literal
    secret), once per generation."""
    generation = int(body["metadata"].get("generation") or 0)
    if spec is None or state.warned_generation == generation:
        return
    for message in compute_spec_warnings(spec):
        try:
            post_event(api, body, "Warning", "LiteralSecretInSpec", message)
        except ApiException as e:
            log.warning(f"posting a spec warning for {body['metadata']['name']}: {e.status} {e.reason}")
    state.warned_generation = generation


def _delete_groups(
    api: Any, owner: Owner, replicas: list[int], groups: list[ObservedGroup], state: ServiceState
) -> None:
    """Delete replica groups this service controls (the groups are the index's controlled ones)."""
    known = dict(state.children)
    known.update({("StatefulSet", group_name(g.service, g.replica)): g.uid for g in groups})
    for replica in replicas:
        _call(
            f"deleting replica group {replica}",
            delete_group, api, owner.namespace, owner.name, replica, owner.uid, known,
        )  # fmt: skip
        for kind in ("StatefulSet", "Service"):
            state.forget_child(kind, group_name(owner.name, replica))


def _recheck_after(
    now: datetime,
    recheck_at: datetime | None,
    *,
    waiting_on_refused: bool,
    missing_pods_unexplained: bool = False,
    inventory_changed: bool = False,
) -> float | None:
    """Seconds until this service must be reconciled again though no watch event may come: at
    once if it waits for GPUs and the inventory changed while it was planned, when a refused
    member's grace ends, when a node hold ends while a group waits for capacity, or when a group
    lacks pods and no Event says why yet."""
    delays = [UNEXPLAINED_MISSING_PODS_RECHECK] if missing_pods_unexplained else []
    if inventory_changed:
        delays.append(0.0)
    if recheck_at is not None:
        delays.append((recheck_at - now).total_seconds() + 1.0)
    release = REFUSED_NODES.seconds_to_next_release() if waiting_on_refused else None
    if release is not None:
        delays.append(release + 1.0)
    return max(0.0, min(delays)) if delays else None


def refresh_status(api: Any, body: Any, view: ClusterView, logger: Any) -> None:
    """A child's status changed: write the service's status from the newest observations, apply nothing."""
    owner = _owner(body["metadata"])
    spec = _parse(owner.name, body["spec"])
    if isinstance(spec, Blocked):
        return
    products = summarize_products(view.all_nodes(), spec.scheduling)
    plan = plan_service(owner, spec, products, policy=view.policy)
    state = service_state((owner.namespace, owner.name), owner.uid)
    with state.lock:
        _write_status(api, body, owner, plan, spec, state, [], view)


def _scheduling_of(snapshot: Any) -> SchedulingSpec | None:
    """The service's scheduling spec from its snapshot; None when it does not parse (the
    reconcile reports why)."""
    try:
        return SchedulingSpec.model_validate((snapshot.get("spec") or {}).get("scheduling") or {})
    except ValidationError:
        return None


def _waiting(key: Key, snapshot: Any) -> bool:
    """Whether the service waits for GPUs, by the status this process last wrote (the index
    may not show it yet) or else the one in its snapshot."""
    status = service_state(key, snapshot["metadata"]["uid"]).written_status or snapshot.get("status") or {}
    conditions = status.get("conditions") or []
    return any(c.get("status") == "False" and c.get("reason") in WAITING_REASONS for c in conditions)


def _queue(memo: kopf.Memo) -> ReconcileQueue:
    queue: ReconcileQueue = memo["reconcile_queue"]
    return queue


def _enqueue_waiting(memo: kopf.Memo, view: ClusterView) -> None:
    for key in list(view.services):
        snapshot = view.service(key)
        if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
            continue
        if _waiting(key, snapshot):
            _queue(memo).enqueue(key, "capacity")


def forget(key: Key) -> None:
    """The service is gone: nothing of it stays in this process (state, metric series)."""
    forget_service(key)
    forget_service_metrics(*key)


@kopf.on.startup()
def on_startup_reconcile_queue(memo: kopf.Memo, **kwargs: Any) -> None:
    workers = int(memo.get("workers") or 8)
    memo["reconcile_queue"] = ReconcileQueue(
        memo.api, ClusterView.from_kwargs(kwargs, memo), reconcile, refresh_status, workers, gone=forget
    )
    memo["reconcile_queue"].start()


@kopf.on.cleanup()
def on_cleanup_reconcile_queue(memo: kopf.Memo, **_: Any) -> None:
    if "reconcile_queue" in memo:
        _queue(memo).stop()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_change_inferenceservice(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    meta = body["metadata"]
    state = service_state((meta["namespace"], meta["name"]), meta["uid"])
    if state.reconciled == (meta["uid"], meta.get("generation")):
        # kopf runs a creation twice when the watch lags its own patch beyond the consistency
        # timeout; this generation's children were applied moments ago by this process.
        logger.debug("this generation is already reconciled")
        return
    again = reconcile(memo.api, body, ClusterView.from_kwargs(kwargs, memo), logger, "inferenceservice")
    if again is not None:
        _queue(memo).enqueue((meta["namespace"], meta["name"]), "recheck", delay=again)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)  # optional: no finalizer is added for it
def on_delete_inferenceservice(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    forget((namespace, name))
    forget_autoscaled_service(memo, namespace, name)
    if "reconcile_queue" in memo:
        _queue(memo).forget((namespace, name))


@kopf.on.event("", "v1", "nodes")
async def on_event_node(type: str, name: str, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Retry services waiting for GPUs when the GPU inventory changes; restart groups on a lost node.

    Event-driven instead of a kopf timer: timers put a finalizer on every InferenceService.
    """
    view = ClusterView.from_kwargs(kwargs, memo)
    node = next((n for n in view.all_nodes() if n.name == name), None)
    if type == "DELETED" or node is None or not node.schedulable:
        for group in view.all_groups():
            snapshot = view.service((group.namespace, group.service))
            if name not in group.nodes or snapshot is None:
                continue
            if type != "DELETED" and node is not None and node.accepts(_scheduling_of(snapshot)):
                continue  # a taint this service tolerates: its group stays (no reconcile per heartbeat)
            _queue(memo).enqueue((group.namespace, group.service), "node")
    if type == "DELETED" or name in view.lost_nodes():
        await asyncio.to_thread(_replace_single_pods_on, memo.api, view, name, logger)
    # Any change a service's sizing or placement may see (capacity, readiness, a cordon, a taint,
    # a label its nodeSelector wants) retries the services waiting for GPUs.
    inventory = sorted(view.all_nodes(), key=lambda node: node.name)
    if inventory != memo.get("gpu_inventory"):
        memo["gpu_inventory"] = inventory
        GPU_INVENTORY.bump()
        _enqueue_waiting(memo, view)


@kopf.on.event("", "v1", "pods")
async def on_event_pod(
    type: str, body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger,
    **kwargs: Any,
) -> None:  # fmt: skip
    view = ClusterView.from_kwargs(kwargs, memo)
    if type != "DELETED":
        service = labels.get(SERVICE_LABEL)
        if service and REPLICA_LABEL in labels and unschedulable(body.get("spec"), body.get("status")):
            _queue(memo).enqueue((namespace, service), "unschedulable")
        return
    if body.get("spec", {}).get("nodeName"):  # a bound pod went away: its GPUs are free
        _enqueue_waiting(memo, view)
    if labels.get(SERVICE_LABEL) and REPLICA_LABEL in labels:
        await asyncio.to_thread(_restart_group_of, memo.api, view, namespace, labels, body, logger)


def _replace_single_pods_on(api: Any, view: ClusterView, node: str, logger: Any) -> None:
    """A lost node's pods would wait out the 300 s eviction toleration: replace them now.

    Deleting the pod is enough: its Deployment schedules a new one on a healthy node. A cordoned
    node is not lost: its pods keep serving until a drain evicts them.
    """
    for (namespace, service), pod in view.single_pods_on(node):
        logger.warning(f"node {node} is lost; replacing pod {pod} of {service}")
        try:
            _call(f"replacing pod {pod}", delete_pod, api, namespace, pod)
        except (kopf.PermanentError, kopf.TemporaryError) as e:  # the lost node's next event retries
            logger.error(str(e))


def _restart_group_of(
    api: Any, view: ClusterView, namespace: str, labels: Any, pod: Any, logger: Any
) -> None:
    """A group member that went away breaks the group (ranks cannot rejoin): restart it whole.

    Only pods of the group's current StatefulSet count, so the restart's own deletions do not loop.
    """
    service, replica = labels.get(SERVICE_LABEL), str(labels.get(REPLICA_LABEL, ""))
    if not service or not replica.isdigit():
        return
    owners = {ref.get("uid") for ref in pod.get("metadata", {}).get("ownerReferences") or []}
    snapshot = view.service((namespace, service))
    current = [
        g for g in view.groups_of((namespace, service)) if g.replica == int(replica) and g.uid in owners
    ]
    if current and snapshot is not None and not snapshot["metadata"].get("deletionTimestamp"):
        logger.warning(
            f"pod {pod['metadata']['name']} of replica group {replica} went away; restarting the group"
        )
        uid = snapshot["metadata"]["uid"]
        known = {("StatefulSet", group_name(service, int(replica))): current[0].uid}
        _call(
            f"restarting replica group {replica}",
            delete_group, api, namespace, service, int(replica), uid, known,
        )  # fmt: skip


@kopf.on.event("apps", "v1", "statefulsets", labels={SERVICE_LABEL: kopf.PRESENT})
async def on_event_statefulset(
    type: str, namespace: str, name: str, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger,
    **kwargs: Any,
) -> None:  # fmt: skip
    view = ClusterView.from_kwargs(kwargs, memo)
    key: Key = (namespace, labels[SERVICE_LABEL])
    _queue(memo).enqueue(key, "statefulset")
    if type == "DELETED":  # its nodes' reservation is released
        snapshot = view.service(key)
        if snapshot is not None:
            service_state(key, snapshot["metadata"]["uid"]).forget_child("StatefulSet", name)
        _enqueue_waiting(memo, view)


@kopf.on.event("apps", "v1", "deployments", labels={SERVICE_LABEL: kopf.PRESENT})
async def on_event_deployment(
    type: str, body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo, logger: kopf.Logger,
    **kwargs: Any,
) -> None:  # fmt: skip
    view = ClusterView.from_kwargs(kwargs, memo)
    key: Key = (namespace, labels[SERVICE_LABEL])
    snapshot = view.service(key)
    if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
        forget(key)
        return  # the owner is gone or going: garbage collection removes the rest
    deleted = type == "DELETED"
    if not is_controlled_by(body, snapshot["metadata"]["uid"]):
        return  # an earlier object's Deployment on its way out, or one this service does not control
    state = service_state(key, snapshot["metadata"]["uid"])
    if deleted:
        state.forget_child("Deployment", body["metadata"]["name"])
    else:  # after a restart, the next apply needs no create first
        state.know_child(body)
    edited = state.offer_deployment(body, deleted=deleted)
    if deleted or edited:
        logger.info(f"Deployment {key[1]} was {'deleted' if deleted else 'edited'}; restoring it")
        _queue(memo).enqueue(key, "deployment")
    else:
        _queue(memo).enqueue(key, STATUS_ONLY)
