"""The node weights cache of one service, within its reconcile: create what its nodes lack,
then write status.weights and an Event per failed fetch (the decisions: planning/weights_cache.py,
and planning/weights_volume.py for a released volume)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from inferfleet.api import InferenceServiceSpec, ShardPlan
from inferfleet.api.status import InferenceServiceStatus, WeightsState
from inferfleet.handlers.calls import call
from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.kube.apply import patch_inference_service_status
from inferfleet.kube.events import post_event
from inferfleet.kube.weights import (
    apply_cache_claim,
    apply_cache_volume,
    apply_job,
    apply_node_labels,
    delete_cache_volume,
    delete_job,
)
from inferfleet.planning.children import build_cached_template
from inferfleet.planning.service import ServicePlan
from inferfleet.planning.weights_cache import compute_node_weights, compute_weights_events, plan_weights
from inferfleet.planning.weights_jobs import CacheSettings
from inferfleet.planning.weights_naming import compute_cacheable
from inferfleet.planning.weights_nodes import (
    CopyKey,
    build_evict_job,
    compute_cached_copies,
    compute_copy_usage,
    compute_finished_evictions,
    compute_prefetch_nodes,
    plan_evictions,
    plan_warm_labels,
)
from inferfleet.planning.weights_observed import CacheObserved
from inferfleet.planning.weights_volume import plan_volume_cleanup
from inferfleet.runtime.state import ServiceState

log = logging.getLogger(__name__)


def build_cached_plan(
    plan: ServicePlan, spec: InferenceServiceSpec | None, cache: CacheSettings | None
) -> ServicePlan:
    """The plan whose engine pods read their weights from the node cache (when it is on)."""
    if cache is None or spec is None or not compute_cacheable(spec.model.source):
        return plan
    children = [build_cached_template(obj, spec, cache.image) for obj in plan.children]
    return replace(plan, children=children)


def serving_nodes(view: ClusterView, key: Key) -> set[str]:
    """Nodes the service's pods are bound to, and the planned nodes of its replica groups."""
    nodes = {node for _, node in view.pods_of(key)}
    return nodes | {node for group in view.groups_of(key) for node in group.nodes}


def apply_weights(
    api: client.ApiClient,
    cache: CacheSettings,
    view: ClusterView,
    spec: InferenceServiceSpec,
    key: Key,
    nodes: set[str],
    now: datetime,
    metadata: bool = False,
) -> tuple[CacheObserved, datetime | None]:
    """Create the claim, volume, directory Jobs and fetch Jobs the service's nodes lack (and its
    metadata Job when `metadata`), retry failed ones that are due, then delete those replaced;
    what is observed afterwards (the claim's uid as created, the Jobs as the watch will show
    them), and when the next failed Job is due."""
    namespace = key[0]
    observed = view.cache_of(namespace, cache.namespace)
    plan = plan_weights(cache, spec, namespace, nodes, observed, now=now, metadata=metadata)
    if plan.claim is not None:
        uid = call("creating the weights cache claim", apply_cache_claim, api, plan.claim)
        observed = replace(observed, claim_uid=uid)
        plan = plan_weights(cache, spec, namespace, nodes, observed, now=now, metadata=metadata)
    if plan.volume is not None:
        call("creating the weights cache volume", apply_cache_volume, api, plan.volume, cache.root)
    for job in (*plan.directory_jobs, *plan.fetch_jobs):
        call(f"creating Job {job['metadata']['name']}", apply_job, api, job)
    for name in plan.delete_jobs:  # after their retries exist: a failure in between loses no count
        call(f"deleting Job {name}", delete_job, api, namespace, name)
    return observed, plan.retry_at


def write_weights_status(
    api: client.ApiClient,
    body: Mapping[str, Any],
    state: ServiceState,
    source: str,
    observed: CacheObserved,
    serving: set[str],
    now: datetime,
    prefetch: frozenset[str] | set[str] = frozenset(),
) -> None:
    """status.weights when it changed (call with the state's lock held); the status write of the
    reconcile that follows keeps it (it evolves the status this one leaves)."""
    base = dict(state.written_status or body.get("status") or {})
    previous = InferenceServiceStatus.read(base).weights
    weights = compute_node_weights(source, observed, serving, previous, now, prefetch)
    if weights == previous:
        return
    dumped = [w.dump() for w in weights or []]
    meta = body["metadata"]
    call(
        f"writing status.weights of {meta['name']}",
        patch_inference_service_status, api, meta["namespace"], meta["name"], {"weights": dumped or None},
    )  # fmt: skip
    state.written_status = (
        {**base, "weights": dumped} if dumped else {k: v for k, v in base.items() if k != "weights"}
    )
    for kind, reason, message in compute_weights_events(previous, weights):
        try:
            post_event(api, body, kind, reason, message)
        except ApiException as e:
            log.warning(f"posting Event {reason} for {meta['name']}: {e.status} {e.reason}")


def prefetch_nodes(
    cache: CacheSettings,
    view: ClusterView,
    spec: InferenceServiceSpec,
    key: Key,
    serving: set[str],
    shards: ShardPlan | None,
) -> set[str]:
    """The nodes spec.model.cache.prefetchNodes keeps warm (none before the replica is sized)."""
    if shards is None:
        return set()
    held = {
        f.node
        for f in view.cache_of(key[0], cache.namespace).fetches
        if f.source == spec.model.source and not f.evict and f.state != WeightsState.FAILED
    }
    return set(
        compute_prefetch_nodes(spec, view.all_nodes(), view.all_bound(), shards.gpus_per_pod, serving, held)
    )


def maintain_nodes(
    api: client.ApiClient, cache: CacheSettings, view: ClusterView, nodes: set[str], kept: set[CopyKey]
) -> None:
    """On `nodes`, across namespaces: clear finished evictions (both Jobs, so a later pod there
    fetches again), evict the least recently used copies over the node budget, and make the warm
    labels match the copies that stay. `kept`: copies this reconcile keeps beyond what the
    services' statuses and pods say."""
    fetches = view.all_fetches()
    finished = compute_finished_evictions(fetches, nodes)
    for namespace, fetch_job, evict_job in finished:
        for name in (fetch_job, evict_job):
            call(f"deleting Job {name}", delete_job, api, namespace, name)
    gone = {(ns, name) for ns, fetch_job, evict_job in finished for name in (fetch_job, evict_job)}
    fetches = [(ns, f) for ns, f in fetches if (ns, f.name) not in gone]
    last_used, in_use = compute_copy_usage(view.all_services(), view.all_engine_pods())
    copies = compute_cached_copies(fetches, view.all_fetch_results(), last_used)
    budget = cache.node_budget_bytes
    evicted = plan_evictions(copies, in_use | kept, budget, nodes) if budget else []
    labels = {name: gpu.labels for name in sorted(nodes) if (gpu := view.node(name)) is not None}
    for name, change in plan_warm_labels(labels, copies, evicted).items():
        call(f"labelling node {name}", apply_node_labels, api, name, change)
    for copy in evicted:
        uid = view.cache_claim_uid(copy.namespace)
        if uid is not None:
            log.info(f"evicting {copy.source} of {copy.namespace} from node {copy.node} ({copy.bytes} bytes)")
            call(
                f"creating an eviction Job on {copy.node}", apply_job, api, build_evict_job(copy, uid, cache)
            )


def reconcile_weights(
    api: client.ApiClient,
    cache: CacheSettings | None,
    view: ClusterView,
    body: Mapping[str, Any],
    spec: InferenceServiceSpec | None,
    state: ServiceState,
    now: datetime,
    shards: ShardPlan | None = None,
    metadata: bool = False,
) -> datetime | None:
    """The service's part of the node cache: a no-op when the cache is off or its source is one
    the cache does not fetch (pvc://, oci://, gs://). `shards`: the planned replica, for which
    nodes a prefetch may use; `metadata`: the model's size is unknown (its facts are read by a
    metadata Job). Returns when a failed Job is due for its retry."""
    if cache is None or spec is None or not compute_cacheable(spec.model.source):
        return None
    key: Key = (body["metadata"]["namespace"], body["metadata"]["name"])
    source = spec.model.source
    nodes = serving_nodes(view, key)
    prefetch = prefetch_nodes(cache, view, spec, key, nodes, shards)
    observed, retry_at = apply_weights(api, cache, view, spec, key, nodes | prefetch, now, metadata)
    write_weights_status(api, body, state, source, observed, nodes, now, prefetch)
    touched = nodes | prefetch | {f.node for f in observed.fetches if f.source == source}
    maintain_nodes(api, cache, view, touched, {(key[0], source, node) for node in prefetch})
    return retry_at


def clean_released_volume(
    api: client.ApiClient, cache: CacheSettings, view: ClusterView, volume: Mapping[str, Any]
) -> None:
    """A cache volume whose claim is gone (its namespace deleted): remove the claim's directory
    from each node that has one (a Job per node), its directory Jobs, then the volume object."""
    claim = (volume.get("spec") or {}).get("claimRef") or {}
    namespace = str(claim.get("namespace") or "")
    directories = view.cache_of(namespace, cache.namespace).directory_jobs
    nodes = [n.name for n in view.all_nodes()]
    cleanup = plan_volume_cleanup(cache, volume, view.cache_claim_uid(namespace), nodes, directories)
    if cleanup.volume is None:
        return
    log.info(f"the claim of PersistentVolume {cleanup.volume} is gone: removing its directories and it")
    for job in cleanup.cleanup_jobs:
        call(f"creating Job {job['metadata']['name']}", apply_job, api, job)
    for name in cleanup.directory_jobs:
        call(f"deleting Job {name}", delete_job, api, cache.namespace, name)
    call(f"deleting PersistentVolume {cleanup.volume}", delete_cache_volume, api, dict(volume), cache.root)
