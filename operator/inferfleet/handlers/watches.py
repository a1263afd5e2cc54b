"""Watch events become keys on the runtime's one work queue; nothing here decides or reconciles.

The InferenceService's own events enqueue it when its generation changed (our own status writes
and metadata changes do not), the initial listing enqueues every service so a restart resumes,
and its deletion forgets it. Children, nodes and pods wake the services they concern (the
decisions are in planning/wake.py). Event-driven instead of kopf timers: timers put a finalizer
on every InferenceService.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from inferfleet.api import GROUP, PLURAL, VERSION
from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.handlers.memo import runtime_of
from inferfleet.handlers.node_loss import replace_single_pods_on, restart_group_of
from inferfleet.handlers.reconciler import SERVICE_TRIGGER, work
from inferfleet.handlers.weights import clean_released_volume
from inferfleet.planning.inference_pool import CRD_NAME as POOL_CRD_NAME
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.planning.observed import is_controlled_by
from inferfleet.planning.wake import (
    DELETED,
    compute_node_lost,
    compute_node_wakes,
    compute_pod_wake,
    compute_waiting_services,
)
from inferfleet.planning.weights_cache import compute_fetch_pod_wakes, compute_weights_wake
from inferfleet.planning.weights_naming import CACHE_LABEL, SOURCE_ANNOTATION
from inferfleet.runtime.operator import OperatorRuntime
from inferfleet.runtime.queue import STATUS_ONLY


@kopf.on.startup()
def on_startup_reconcile_queue(memo: kopf.Memo, **kwargs: Any) -> None:
    runtime = runtime_of(memo)
    view = ClusterView.from_kwargs(kwargs, runtime.config)
    runtime.queue.start(lambda key, trigger: work(runtime, view, key, trigger))


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_event_inferenceservice(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime = runtime_of(memo)
    meta = body["metadata"]
    key: Key = (meta["namespace"], meta["name"])
    if type == DELETED:
        runtime.forget(key)
        return
    state = runtime.state(key, meta["uid"])
    generation = int(meta.get("generation") or 0)
    if state.seen_generation == generation:
        return  # a status or metadata change: our own status writes must not cause reconciles
    state.seen_generation = generation
    runtime.queue.enqueue(key, SERVICE_TRIGGER)


def enqueue_waiting(runtime: OperatorRuntime, view: ClusterView) -> None:
    """Services waiting for GPUs try again: by the status this process last wrote (the index
    may not show it yet), else the one in their snapshot."""
    statuses = {}
    for key in list(view.services):
        snapshot = view.service(key)
        if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
            continue
        written = runtime.state(key, snapshot["metadata"]["uid"]).written_status
        statuses[key] = written or snapshot.get("status")
    for key in compute_waiting_services(statuses):
        runtime.queue.enqueue(key, "capacity")


@kopf.on.event("", "v1", "nodes")
async def on_event_node(
    type: str | None, name: str, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Restart groups on a node that no longer takes them, replace single pods of a lost node,
    retry the services waiting for GPUs when the GPU inventory changed."""
    runtime = runtime_of(memo)
    view = ClusterView.from_kwargs(kwargs, runtime.config)
    node = view.node(name)
    groups = view.all_groups()
    specs = {
        key: snapshot.get("spec") or {}
        for key in {(g.namespace, g.service) for g in groups if name in g.nodes}
        if (snapshot := view.service(key)) is not None
    }
    for key in compute_node_wakes(type, name, node, groups, specs):
        runtime.queue.enqueue(key, "node")
    if compute_node_lost(type, name, view.lost_nodes()):
        await asyncio.to_thread(replace_single_pods_on, runtime.api, view, name, logger)
    # Any change a service's sizing or placement may see (capacity, readiness, a cordon, a taint,
    # a label its nodeSelector wants) retries the services waiting for GPUs.
    if runtime.inventory.update(view.all_nodes()):
        enqueue_waiting(runtime, view)


@kopf.on.event("", "v1", "pods")
async def on_event_pod(
    type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo,
    logger: kopf.Logger, **kwargs: Any,
) -> None:  # fmt: skip
    runtime = runtime_of(memo)
    wake = compute_pod_wake(type, namespace, labels, body.get("spec"), body.get("status"))
    if wake.reconcile is not None:
        runtime.queue.enqueue(wake.reconcile, "unschedulable")
    if wake.status_of is not None:
        runtime.queue.enqueue(wake.status_of, STATUS_ONLY)
    waiting = compute_weights_wake(namespace, labels, body.get("spec"), body.get("status"), type == DELETED)
    if waiting is not None and runtime.config.model_cache is not None:
        runtime.queue.enqueue(waiting, "weights")
    if labels.get(CACHE_LABEL) == "fetch" and runtime.config.model_cache is not None:
        services = ClusterView.from_kwargs(kwargs, runtime.config).all_services()
        for key in compute_fetch_pod_wakes(namespace, labels, body.get("status"), services):
            runtime.queue.enqueue(key, "weights")
    if wake.frees_gpus or wake.member_gone is not None:
        view = ClusterView.from_kwargs(kwargs, runtime.config)
        if wake.frees_gpus:
            enqueue_waiting(runtime, view)
        if wake.member_gone is not None:
            key, replica = wake.member_gone
            await asyncio.to_thread(restart_group_of, runtime.api, view, key, replica, body, logger)


@kopf.on.event("apps", "v1", "statefulsets", labels={SERVICE_LABEL: kopf.PRESENT})
async def on_event_statefulset(
    type: str | None, namespace: str, name: str, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> None:
    runtime = runtime_of(memo)
    key: Key = (namespace, labels[SERVICE_LABEL])
    runtime.queue.enqueue(key, "statefulset")
    if type == DELETED:  # its nodes' reservation is released
        view = ClusterView.from_kwargs(kwargs, runtime.config)
        snapshot = view.service(key)
        if snapshot is not None:
            runtime.state(key, snapshot["metadata"]["uid"]).forget_child("StatefulSet", name)
        enqueue_waiting(runtime, view)


@kopf.on.event("apps", "v1", "deployments", labels={SERVICE_LABEL: kopf.PRESENT})
async def on_event_deployment(
    type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, memo: kopf.Memo,
    logger: kopf.Logger, **kwargs: Any,
) -> None:  # fmt: skip
    runtime = runtime_of(memo)
    key: Key = (namespace, labels[SERVICE_LABEL])
    snapshot = ClusterView.from_kwargs(kwargs, runtime.config).service(key)
    if snapshot is None or snapshot["metadata"].get("deletionTimestamp"):
        runtime.forget(key)
        return  # the owner is gone or going: garbage collection removes the rest
    if not is_controlled_by(body, snapshot["metadata"]["uid"]):
        return  # an earlier object's Deployment on its way out, or one this service does not control
    state = runtime.state(key, snapshot["metadata"]["uid"])
    deleted = type == DELETED
    if deleted:
        state.forget_child("Deployment", body["metadata"]["name"])
    else:  # after a restart, the next apply needs no create first
        state.know_child(body)
    edited = state.offer_deployment(body, deleted=deleted)
    if deleted or edited:
        logger.info(f"Deployment {key[1]} was {'deleted' if deleted else 'edited'}; restoring it")
        runtime.queue.enqueue(key, "deployment")
    else:
        runtime.queue.enqueue(key, STATUS_ONLY)


@kopf.on.event("batch", "v1", "jobs", labels={CACHE_LABEL: "fetch"})
async def on_event_fetch_job(
    namespace: str, annotations: kopf.Annotations, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A fetch Job changed: the namespace's services of that model write status.weights again."""
    runtime = runtime_of(memo)
    view = ClusterView.from_kwargs(kwargs, runtime.config)
    source = annotations.get(SOURCE_ANNOTATION)
    for key in list(view.services):
        snapshot = view.service(key)
        if (
            key[0] == namespace
            and snapshot is not None
            and (snapshot.get("spec") or {}).get("model", {}).get("source") == source
        ):
            runtime.queue.enqueue(key, "weights")


@kopf.on.event("", "v1", "persistentvolumes", labels={CACHE_LABEL: "volume"})
async def on_event_cache_volume(
    type: str | None, body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A cache volume turned Released (its claim was deleted with its namespace): its files on the
    nodes and the volume go (handlers/weights.py); also at startup, for those left then."""
    runtime = runtime_of(memo)
    cache = runtime.config.model_cache
    if cache is None or type == DELETED or status.get("phase") != "Released":
        return
    view = ClusterView.from_kwargs(kwargs, runtime.config)
    await asyncio.to_thread(clean_released_volume, runtime.api, cache, view, dict(body))


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name == POOL_CRD_NAME,
)
async def on_event_inference_pool_crd(memo: kopf.Memo, **kwargs: Any) -> None:
    """The InferencePool API was installed, became established, or went: every service looks again
    (its pool planned, or no longer), instead of after the discovery answer's minute."""
    runtime = runtime_of(memo)
    runtime.inference_pools_served.forget()
    if not runtime.config.inference_pools:
        return
    view = ClusterView.from_kwargs(kwargs, runtime.config)
    for key in list(view.services):
        runtime.queue.enqueue(key, "inferencepool-api")


@kopf.on.event(
    "autoscaling.x-k8s.io",
    "v1",
    "provisioningrequests",
    labels={SERVICE_LABEL: kopf.PRESENT},
)
async def on_event_provisioning_request(
    namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_: Any
) -> None:
    """The node autoscaler answered (Provisioned, Failed, BookingExpired) or a request went: its
    service looks again."""
    runtime_of(memo).queue.enqueue((namespace, labels[SERVICE_LABEL]), "provisioning")
