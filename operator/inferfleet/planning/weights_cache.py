"""The node weights cache, decided: which volume, claim and Jobs a service needs on which nodes,
which failed Jobs are retried now, each node's state from the observed Jobs (status.weights and
its Events), and which services a pod's change wakes.

One cache per namespace on each node (docs/weights.md says why): a `local` PersistentVolume at
`<root>/<namespace>.<claim uid>` whose node affinity is every node, pre-bound to the claim
`inferfleet-model-cache` in the namespace. Fetch Jobs run in the namespace (so they may use its
token Secrets) and mount the claim read-write; engine pods mount it read-only. The directory on
each node is made by a small Job in the operator's own namespace (a `local` volume's path must
exist; the tenant's namespace may forbid hostPath).

The names, labels and annotations the cache's objects share are in weights_naming.py, the claim
and volume built (and removed once released) in weights_volume.py, the Jobs built (with their
limits) in weights_jobs.py, the Jobs and fetch results read back and the retry decision (with its
backoff) in weights_observed.py; prefetch, warm node labels and eviction in weights_nodes.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inferfleet.api import InferenceServiceSpec
from inferfleet.api.limits import MAX_WEIGHTS_NODES
from inferfleet.api.status import NodeWeights, WeightsReason, WeightsState
from inferfleet.planning.conditions import bound_message, find_true_condition, rfc3339
from inferfleet.planning.model_files import MetadataFetch, ModelFacts
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.planning.weights_jobs import (
    CacheSettings,
    build_directory_job,
    build_fetch_job,
    build_metadata_job,
    compute_tolerations,
)
from inferfleet.planning.weights_naming import (
    CACHE_LABEL,
    MODEL_LABEL,
    WAIT_CONTAINER,
    compute_cacheable,
    compute_model_id,
    directory_job_name,
)
from inferfleet.planning.weights_observed import (
    CacheObserved,
    FetchResult,
    FetchRetry,
    ObservedFetch,
    compute_current_fetches,
    compute_fetch_retry,
)
from inferfleet.planning.weights_volume import build_cache_claim, build_cache_volume


def compute_warm_nodes(fetches: Iterable[ObservedFetch], source: str) -> frozenset[str]:
    """Nodes whose cache holds `source` (a completed fetch, not an eviction): where a new replica
    group starts warm, a tie-breaker for its placement."""
    return frozenset(
        f.node for f in fetches if f.source == source and f.state == WeightsState.PRESENT and not f.evict
    )


def compute_fetched_facts(observed: CacheObserved, source: str) -> ModelFacts | None:
    """The model's facts a finished fetch of `source` reported from its files, if any did (the
    first such node's, by name: every node fetched the same revision of the same source), else
    those its metadata Job read."""
    results = observed.results or {}
    fetches = sorted(observed.fetches, key=lambda f: f.node)
    for fetch in [*fetches, *sorted(observed.metadata, key=lambda f: -f.attempt)]:
        result = results.get(fetch.name)
        if fetch.source == source and not fetch.evict and result is not None and result.model is not None:
            return result.model
    return None


@dataclass(frozen=True)
class WeightsPlan:
    """Objects to create, in this order; empty when the cache is off or the source is not cached."""

    claim: dict[str, Any] | None = None
    volume: dict[str, Any] | None = None
    directory_jobs: tuple[dict[str, Any], ...] = ()
    fetch_jobs: tuple[dict[str, Any], ...] = ()
    """Fetch and metadata Jobs: first attempts, and retries of failed ones."""
    delete_jobs: tuple[str, ...] = ()
    """Failed Jobs of the namespace a retry replaces (deleted once their retry is created)."""
    retry_at: datetime | None = None
    """When the next failed Job is due for its retry (look again then)."""


@dataclass(frozen=True)
class _Retries:
    due: tuple[ObservedFetch, ...] = ()
    superseded: tuple[str, ...] = ()
    next_at: datetime | None = None


def _plan_retries(
    jobs: Sequence[ObservedFetch], wanted: Iterable[str], observed: CacheObserved, now: datetime | None
) -> _Retries:
    """Of `jobs` (one source's fetch Jobs, or its metadata Jobs under node ""), the latest attempts
    on `wanted` nodes that are due for a retry, the earlier attempts to delete, the next retry."""
    current = compute_current_fetches(jobs)
    superseded = tuple(sorted(f.name for f in jobs if current[f.node] is not f))
    if now is None:
        return _Retries(superseded=superseded)
    results = observed.results or {}
    due: list[tuple[ObservedFetch, datetime]] = []
    later: list[tuple[ObservedFetch, datetime]] = []
    for node in sorted(set(wanted) & set(current)):
        retry = compute_fetch_retry(current[node], results.get(current[node].name), now)
        if retry is None or retry.at is None:
            continue
        (due if retry.at <= now else later).append((current[node], retry.at))
    return _Retries(tuple(f for f, _ in due), superseded, min((at for _, at in later), default=None))


def plan_weights(
    settings: CacheSettings,
    spec: InferenceServiceSpec,
    namespace: str,
    nodes: Iterable[str],
    observed: CacheObserved,
    *,
    now: datetime | None = None,
    metadata: bool = False,
) -> WeightsPlan:
    """What the service's nodes lack: the claim first (the volume names its uid), then the volume,
    each node's directory and a fetch on each node without one for this source (one Job per
    namespace, source and node). A failed fetch is retried (`compute_fetch_retry`) as a new Job
    on a node the service still wants, and the failed one goes. `metadata`: the model's size is
    unknown, so a metadata Job reads its facts (one per namespace and source, retried alike)."""
    source = spec.model.source
    if not compute_cacheable(source):
        return WeightsPlan()
    uid = observed.claim_uid
    if uid is None:
        return WeightsPlan(claim=build_cache_claim(namespace))
    tolerations, wanted = compute_tolerations(spec), sorted(set(nodes))
    fetches = [f for f in observed.fetches if f.source == source and not f.evict]
    fetched = {f.node for f in fetches}
    retries = _plan_retries(fetches, wanted, observed, now)
    missing = [(node, 1) for node in wanted if node not in fetched]
    retried = [(f.node, f.attempt + 1) for f in retries.due]
    jobs = [build_fetch_job(spec, namespace, n, uid, settings, tolerations, a) for n, a in missing + retried]
    reads = [m for m in observed.metadata if m.source == source]
    meta = _plan_retries(reads, [""] if metadata else [], observed, now)
    if metadata and not reads:
        jobs.append(build_metadata_job(spec, namespace, uid, settings))
    jobs += [build_metadata_job(spec, namespace, uid, settings, m.attempt + 1) for m in meta.due]
    retry_at = min((at for at in (retries.next_at, meta.next_at) if at is not None), default=None)
    return WeightsPlan(
        volume=None if observed.volume_exists else build_cache_volume(settings.root, namespace, uid),
        directory_jobs=tuple(
            build_directory_job(settings, namespace, uid, node, tolerations)
            for node in wanted
            if directory_job_name(uid, node) not in observed.directory_jobs
        ),
        fetch_jobs=tuple(jobs),
        delete_jobs=(*retries.superseded, *meta.superseded, *(f.name for f in (*retries.due, *meta.due))),
        retry_at=retry_at,
    )


def compute_metadata_fetch(observed: CacheObserved, source: str, now: datetime) -> MetadataFetch:
    """Where reading `source`'s facts without its weights stands (the cache is on)."""
    current = compute_current_fetches(m for m in observed.metadata if m.source == source).get("")
    if current is None:
        return MetadataFetch()
    if current.state == WeightsState.PRESENT:
        return MetadataFetch(job=current.name, done=True)
    if current.state != WeightsState.FAILED:
        return MetadataFetch(job=current.name, attempt=current.attempt)
    result = (observed.results or {}).get(current.name)
    retry = compute_fetch_retry(current, result, now)
    error = f"{result.error or 'Failed'}: {result.message}" if result and result.message else current.message
    retry_text = retry.describe() if retry else None
    return MetadataFetch(current.name, current.attempt, error or "Failed", retry_text)


_ORDER = {WeightsState.FAILED: 0, WeightsState.EVICTING: 1, WeightsState.FETCHING: 1, WeightsState.PRESENT: 2}


_REASONS = {
    WeightsState.PRESENT: WeightsReason.FETCHED,
    WeightsState.FETCHING: WeightsReason.FETCH_RUNNING,
    WeightsState.FAILED: WeightsReason.FETCH_FAILED,
    WeightsState.EVICTING: WeightsReason.OVER_BUDGET,
}


def _node_weights(
    fetch: ObservedFetch,
    result: FetchResult | None,
    last_used: str | None,
    evicting: bool,
    prefetch: bool,
    retry: FetchRetry | None,
) -> NodeWeights:
    message = fetch.message
    if fetch.state == WeightsState.FAILED and result is not None and result.message:
        message = f"{result.error or 'Failed'}: {result.message}"
    if fetch.state == WeightsState.FAILED and retry is not None:
        message = f"{retry.describe()}: {message or 'Failed'}"  # first: a long error is cut at the end
    present = fetch.state == WeightsState.PRESENT and result is not None
    state = WeightsState.EVICTING if evicting and fetch.state == WeightsState.PRESENT else fetch.state
    return NodeWeights(
        node=fetch.node,
        state=state,
        reason=_REASONS[state],
        message=bound_message(message) if message and fetch.state == WeightsState.FAILED else None,
        bytes=result.bytes if present and result is not None else None,
        revision=result.revision if present and result is not None else None,
        job=fetch.name,
        last_used=last_used,
        prefetch=True if prefetch else None,
    )


def compute_node_weights(
    source: str,
    observed: CacheObserved,
    serving: Iterable[str],
    previous: Sequence[NodeWeights] | None,
    now: datetime,
    prefetch: Iterable[str] = (),
) -> list[NodeWeights] | None:
    """status.weights: each node's fetch of this source (its latest attempt); failed and fetching
    first, then the most recently used, at most MAX_WEIGHTS_NODES. `serving`: nodes the service's
    pods are on now; `prefetch`: nodes kept warm for it beyond those. A failed fetch on a node the
    service wants says which attempt failed and when the next starts (or why none will)."""
    ours = (f for f in observed.fetches if f.source == source and not f.evict)
    fetches = list(compute_current_fetches(ours).values())
    if not fetches:
        return None
    evicting = {f.node for f in observed.fetches if f.source == source and f.evict}
    used = {w.node: w.last_used for w in previous or []}
    used.update({node: rfc3339(now) for node in serving})
    results, kept, wanted = observed.results or {}, set(prefetch) - set(serving), set(serving) | set(prefetch)
    entries = [
        _node_weights(
            f,
            results.get(f.name),
            used.get(f.node),
            f.node in evicting,
            f.node in kept,
            compute_fetch_retry(f, results.get(f.name), now) if f.node in wanted else None,
        )
        for f in fetches
    ]
    entries.sort(key=lambda w: (_ORDER[w.state], _negated(w.last_used), w.node))
    return entries[:MAX_WEIGHTS_NODES]


def _negated(stamp: str | None) -> str:
    """Sorts newer RFC 3339 stamps first (and none last)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in stamp) if stamp else "\U0010ffff"


def compute_weights_events(
    previous: Sequence[NodeWeights] | None, current: Sequence[NodeWeights] | None
) -> list[tuple[str, str, str]]:
    """A Warning per node whose fetch turned Failed."""
    before = {w.node: w.state for w in previous or []}
    return [
        (
            "Warning",
            WeightsReason.FETCH_FAILED,
            f"fetching the weights on node {w.node} failed: {w.message or ''}",
        )
        for w in current or []
        if w.state == WeightsState.FAILED and before.get(w.node) != WeightsState.FAILED
    ]


def compute_weights_wake(
    namespace: str,
    labels: Mapping[str, str],
    spec: Mapping[str, Any] | None,
    status: Mapping[str, Any] | None,
    deleted: bool = False,
) -> tuple[str, str] | None:
    """An engine pod of a cached model, bound to a node and not Ready yet (its wait may still be
    waiting): its service makes sure the node fetches the weights. Deleted: the weights it used
    on its node may be evicted now, so its service looks at that node again."""
    service = labels.get(SERVICE_LABEL)
    spec, status = spec or {}, status or {}
    if not service or not spec.get("nodeName"):
        return None
    if not any(c.get("name") == WAIT_CONTAINER for c in spec.get("initContainers") or []):
        return None
    done = find_true_condition(status.get("conditions"), "Ready") is not None
    return (namespace, str(service)) if deleted or not done else None


def compute_fetch_pod_wakes(
    namespace: str,
    labels: Mapping[str, str],
    status: Mapping[str, Any] | None,
    services: Mapping[tuple[str, str], Mapping[str, Any]],
) -> list[tuple[str, str]]:
    """A fetch pod that terminated (its result, the size, is in its status now; the Job's own
    event may have come first): the namespace's services of that model read it."""
    model = labels.get(MODEL_LABEL)
    if (
        labels.get(CACHE_LABEL) != "fetch"
        or not model
        or (status or {}).get("phase") not in ("Succeeded", "Failed")
    ):
        return []
    return sorted(
        key
        for key, body in services.items()
        if key[0] == namespace
        and compute_model_id(str(((body.get("spec") or {}).get("model") or {}).get("source"))) == model
    )
