"""The node weights cache across services and namespaces, decided per node: which nodes keep a
model warm beyond its serving ones (prefetch), which node labels say where a model is (and the
engine pods' soft preference for them), and which copies leave a node over its byte budget (least
recently used, never one a pod uses).

A copy is one namespace's fetched model on one node (the cache is per namespace: docs/weights.md).
Everything is read from the fetch Jobs (all namespaces), the services' status.weights and the
bound engine pods; nothing here does IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.status import WeightsState
from inferfleet.planning.inventory import GpuNode
from inferfleet.planning.placement import BoundPod
from inferfleet.planning.weights_jobs import CacheSettings, build_restricted_pod
from inferfleet.planning.weights_naming import (
    ACTION_LABEL,
    CACHE_CLAIM,
    CACHE_LABEL,
    FETCH_MOUNT,
    MODEL_LABEL,
    NODE_ANNOTATION,
    SOURCE_ANNOTATION,
    WARM_LABEL_PREFIX,
    compute_model_id,
    compute_warm_label,
    evict_job_name,
    fetch_job_name,
)
from inferfleet.planning.weights_observed import FetchResult, ObservedFetch

EVICT_TOLERATIONS = ({"operator": "Exists"},)
WARM_PREFERENCE_WEIGHT = 100
CopyKey = tuple[str, str, str]
"""(namespace, source, node)."""


def build_warm_affinity(namespace: str, source: str) -> dict[str, Any]:
    """A soft preference for nodes holding the weights: it never keeps a pod from scheduling, and
    the pod template names a label, not nodes, so a node turning warm changes no template."""
    term = {"matchExpressions": [{"key": compute_warm_label(namespace, source), "operator": "Exists"}]}
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": WARM_PREFERENCE_WEIGHT, "preference": term}
            ]
        }
    }


def compute_prefetch_nodes(
    spec: InferenceServiceSpec,
    nodes: Iterable[GpuNode],
    bound: Iterable[BoundPod],
    gpus_per_pod: int,
    serving: Iterable[str],
    held: Iterable[str],
) -> list[str]:
    """spec.model.cache.prefetchNodes nodes beyond the serving ones, sorted: nodes a replica could
    run on (product, tolerations and node selector, enough GPUs), those that already hold (or
    fetch) the weights and still have room for a replica first, so the choice stays put, then the
    most free GPUs, then by name."""
    count = spec.model.cache.prefetch_nodes if spec.model.cache else 0
    if count <= 0:
        return []
    used: dict[str, int] = {}
    for pod in bound:
        used[pod.node] = used.get(pod.node, 0) + pod.gpus
    taken, kept = set(serving), set(held)
    product = spec.accelerator.product
    eligible = [
        n
        for n in nodes
        if n.name not in taken
        and n.accepts(spec.scheduling)
        and (product is None or n.product == product)
        and n.gpus >= gpus_per_pod
    ]

    def rank(n: GpuNode) -> tuple[bool, int, str]:
        free = max(0, n.gpus - used.get(n.name, 0))
        return (not (n.name in kept and free >= gpus_per_pod), -free, n.name)

    return sorted(n.name for n in sorted(eligible, key=rank)[:count])


@dataclass(frozen=True)
class CachedCopy:
    """One namespace's published copy of one model on one node."""

    namespace: str
    source: str
    node: str
    bytes: int | None
    """None: its fetch reported no size (it neither counts against the budget nor is evicted)."""
    last_used: str
    """The later of the last time a pod used it and the fetch's completion (RFC 3339)."""
    evicting: bool = False

    @property
    def key(self) -> CopyKey:
        return (self.namespace, self.source, self.node)


def compute_copy_usage(
    services: Mapping[tuple[str, str], Mapping[str, Any]], pods: Iterable[tuple[tuple[str, str], str]]
) -> tuple[dict[CopyKey, str], set[CopyKey]]:
    """When each copy was last used (the newest lastUsed any service of that namespace and source
    reports for the node), and the copies kept whatever the budget: a pod of such a service is
    bound to the node (terminating ones too: their files may still be open), or a service keeps
    the node warm for prefetch. `services`: snapshots by key; `pods`: (service key, node)."""
    last: dict[CopyKey, str] = {}
    kept: set[CopyKey] = set()
    sources: dict[tuple[str, str], str] = {}
    for (namespace, name), body in services.items():
        source = ((body.get("spec") or {}).get("model") or {}).get("source")
        if not isinstance(source, str):
            continue
        sources[(namespace, name)] = source
        for w in (body.get("status") or {}).get("weights") or []:
            key = (namespace, source, str(w.get("node")))
            stamp = w.get("lastUsed")
            if isinstance(stamp, str) and stamp > last.get(key, ""):
                last[key] = stamp
            if w.get("prefetch"):
                kept.add(key)
    for service, node in pods:
        if service in sources:
            kept.add((service[0], sources[service], node))
    return last, kept


def compute_cached_copies(
    fetches: Iterable[tuple[str, ObservedFetch]],
    results: Mapping[tuple[str, str], FetchResult],
    last_used: Mapping[CopyKey, str],
) -> list[CachedCopy]:
    """The published copies (a completed fetch), sorted, with the size its pod reported; a copy
    with an eviction Job is `evicting`."""
    evicting = {(ns, f.source, f.node) for ns, f in fetches if f.evict}
    copies = []
    for namespace, fetch in fetches:
        result = results.get((namespace, fetch.name))
        if fetch.evict or fetch.state != WeightsState.PRESENT:
            continue
        key = (namespace, fetch.source, fetch.node)
        used = max(last_used.get(key, ""), fetch.completed or "")
        copies.append(CachedCopy(*key, result.bytes if result else None, used, key in evicting))
    return sorted(copies, key=lambda c: c.key)


def plan_evictions(
    copies: Iterable[CachedCopy], kept: set[CopyKey], budget: int, nodes: Iterable[str]
) -> list[CachedCopy]:
    """On each of `nodes` over `budget` bytes: the least recently used copies not kept, until the
    node is within budget (or nothing more may go). Copies already evicting no longer count; ties
    go to the larger copy (fewer evictions), then by namespace and source."""
    wanted = set(nodes)
    by_node: dict[str, list[tuple[CachedCopy, int]]] = {}
    for copy in copies:
        if copy.node in wanted and not copy.evicting and copy.bytes is not None:
            by_node.setdefault(copy.node, []).append((copy, copy.bytes))
    evicted: list[CachedCopy] = []
    for node in sorted(by_node):
        held = by_node[node]
        total = sum(size for _, size in held)
        for copy, size in sorted(
            ((c, n) for c, n in held if c.key not in kept),
            key=lambda e: (e[0].last_used, -e[1], e[0].namespace, e[0].source),
        ):
            if total <= budget:
                break
            evicted.append(copy)
            total -= size
    return evicted


def plan_warm_labels(
    node_labels: Mapping[str, Mapping[str, str]],
    copies: Iterable[CachedCopy],
    evicted: Iterable[CachedCopy] = (),
) -> dict[str, dict[str, str | None]]:
    """The label changes per node (None removes one): a node carries the label of each copy it
    holds that is not on its way out, and no other label under WARM_LABEL_PREFIX (a namespace
    deleted with its Jobs leaves labels that the next look at the node removes)."""
    going = {c.key for c in evicted}
    wanted: dict[str, set[str]] = {node: set() for node in node_labels}
    for c in copies:
        if c.node in wanted and not c.evicting and c.key not in going:
            wanted[c.node].add(compute_warm_label(c.namespace, c.source))
    patches: dict[str, dict[str, str | None]] = {}
    for node, labels in sorted(node_labels.items()):
        have = {k for k in labels if k.startswith(WARM_LABEL_PREFIX)}
        change: dict[str, str | None] = {k: "true" for k in sorted(wanted[node] - have)}
        change.update({k: None for k in sorted(have - wanted[node])})
        if change:
            patches[node] = change
    return patches


def compute_finished_evictions(
    fetches: Iterable[tuple[str, ObservedFetch]], nodes: Iterable[str]
) -> list[tuple[str, str, str]]:
    """(namespace, fetch Job, eviction Job) of evictions on `nodes` that completed: the eviction
    Job and every fetch Job of that copy (each attempt) go, so a later pod on the node fetches
    again."""
    wanted, seen = set(nodes), list(fetches)
    finished = []
    for ns, f in seen:
        if not (f.evict and f.state == WeightsState.PRESENT and f.node in wanted):
            continue
        copies = [c.name for n, c in seen if (n, c.source, c.node) == (ns, f.source, f.node) and not c.evict]
        for fetch_job in copies or [fetch_job_name(ns, f.source, f.node)]:
            finished.append((ns, fetch_job, f.name))
    return sorted(finished)


def build_evict_job(copy: CachedCopy, claim_uid: str, settings: CacheSettings) -> dict[str, Any]:
    """`inferfleet fetch-model SOURCE --evict` on the copy's node, in its namespace, mounting the
    namespace's cache claim: it takes the model's fetch lock and removes the model's directory.
    It tolerates every taint: the service that fetched the copy (and its tolerations) may be gone,
    and removing files must reach the node whatever keeps engine pods off it."""
    labels = {CACHE_LABEL: "fetch", MODEL_LABEL: compute_model_id(copy.source), ACTION_LABEL: "evict"}
    container = {
        "name": "evict",
        "image": settings.image,
        "args": [
            "fetch-model",
            copy.source,
            "--evict",
            "--cache-root",
            FETCH_MOUNT,
            "--termination-log",
            "/dev/termination-log",
        ],
        "volumeMounts": [{"name": "cache", "mountPath": FETCH_MOUNT}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": evict_job_name(copy.namespace, copy.source, copy.node),
            "namespace": copy.namespace,
            "labels": labels,
            "annotations": {NODE_ANNOTATION: copy.node, SOURCE_ANNOTATION: copy.source},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": CACHE_CLAIM, "uid": claim_uid}
            ],
        },
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": labels},
                "spec": build_restricted_pod(copy.node, EVICT_TOLERATIONS, container),
            },
        },
    }
