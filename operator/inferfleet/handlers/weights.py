"""The node weights cache of one service, within its reconcile: create what its nodes lack,
then write status.weights and an Event per failed fetch (the decisions: planning/weights_cache.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from kubernetes.client.rest import ApiException

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.status import InferenceServiceStatus
from inferfleet.handlers.calls import call
from inferfleet.handlers.indexes import ClusterView, Key
from inferfleet.kube.apply import patch_inference_service_status
from inferfleet.kube.events import post_event
from inferfleet.kube.weights import apply_cache_claim, apply_cache_volume, apply_job
from inferfleet.planning.children import build_cached_template
from inferfleet.planning.service import ServicePlan
from inferfleet.planning.weights_cache import (
    CacheObserved,
    CacheSettings,
    compute_cacheable,
    compute_node_weights,
    compute_weights_events,
    plan_weights,
)
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
    api: Any, cache: CacheSettings, view: ClusterView, spec: InferenceServiceSpec, key: Key, nodes: set[str]
) -> CacheObserved:
    """Create the claim, volume, directory Jobs and fetch Jobs the service's nodes lack; what is
    observed afterwards (the claim's uid as created, the Jobs as the watch will show them)."""
    namespace = key[0]
    observed = view.cache_of(namespace, cache.namespace)
    plan = plan_weights(cache, spec, namespace, nodes, observed)
    if plan.claim is not None:
        uid = call("creating the weights cache claim", apply_cache_claim, api, plan.claim)
        observed = replace(observed, claim_uid=uid)
        plan = plan_weights(cache, spec, namespace, nodes, observed)
    if plan.volume is not None:
        call("creating the weights cache volume", apply_cache_volume, api, plan.volume, cache.root)
    for job in (*plan.directory_jobs, *plan.fetch_jobs):
        call(f"creating Job {job['metadata']['name']}", apply_job, api, job)
    return observed


def write_weights_status(
    api: Any,
    body: Mapping[str, Any],
    state: ServiceState,
    source: str,
    observed: CacheObserved,
    serving: set[str],
    now: datetime,
) -> None:
    """status.weights when it changed (call with the state's lock held); the status write of the
    reconcile that follows keeps it (it evolves the status this one leaves)."""
    base = dict(state.written_status or body.get("status") or {})
    previous = InferenceServiceStatus.read(base).weights
    weights = compute_node_weights(source, observed, serving, previous, now)
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


def reconcile_weights(
    api: Any,
    cache: CacheSettings | None,
    view: ClusterView,
    body: Mapping[str, Any],
    spec: InferenceServiceSpec | None,
    state: ServiceState,
    now: datetime,
) -> None:
    """The service's part of the node cache: a no-op when the cache is off or its source is one
    the cache does not fetch (pvc://, oci://, gs://)."""
    if cache is None or spec is None or not compute_cacheable(spec.model.source):
        return
    key: Key = (body["metadata"]["namespace"], body["metadata"]["name"])
    nodes = serving_nodes(view, key)
    observed = apply_weights(api, cache, view, spec, key, nodes)
    write_weights_status(api, body, state, spec.model.source, observed, nodes, now)
