"""The node weights cache as read back from the cluster: fetch, eviction and metadata Jobs as
watched, the JSON result a fetch pod left as its termination message, and what follows a failed
Job (a new attempt after a doubling backoff, unless its error is one a rerun cannot heal)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from inferfleet.api.status import WeightsState
from inferfleet.planning.conditions import parse_rfc3339, rfc3339
from inferfleet.planning.model_files import ModelFacts, parse_facts_record
from inferfleet.planning.weights_naming import (
    ACTION_LABEL,
    ATTEMPT_ANNOTATION,
    METADATA_ACTION,
    NODE_ANNOTATION,
    PERMANENT_EXIT_CODES,
    SOURCE_ANNOTATION,
)

RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 600.0
PERMANENT_ERRORS = frozenset(
    {"NotFound", "Unsupported", "BadSource", "BadOptions", "BadEndpoint", "BadListing", "BadHeader",
     "InsufficientSpace"}
)  # fmt: skip
"""Errors of `fetch-model` (its JSON `error`) that a rerun cannot heal: the source said 401/403/404
(hf: RepositoryNotFound, Gated, RevisionNotFound; S3: NoSuchBucket, AccessDenied, no objects), the
URI, options or listing are wrong, a header is broken, the node's disk is too small for the model.
Everything else (SourceUnavailable, Incomplete, ChecksumMismatch, a pod killed before it wrote a
result) is retried."""


@dataclass(frozen=True)
class ObservedFetch:
    """A fetch Job as watched (or a metadata Job: `node` empty)."""

    name: str
    node: str
    source: str
    state: WeightsState
    message: str | None = None
    evict: bool = False
    """An eviction Job (its state: Present once the files are gone)."""
    completed: str | None = None
    """When the Job completed (RFC 3339): a fetch's weights count as used then."""
    attempt: int = 1
    failed_at: str | None = None
    """When the Job failed (RFC 3339): its retry's backoff counts from then."""


@dataclass(frozen=True)
class FetchResult:
    """The JSON line a finished fetch pod left as its termination message."""

    bytes: int | None = None
    revision: str | None = None
    error: str | None = None
    message: str | None = None
    model: ModelFacts | None = None
    """The facts of the fetched files (config.json, safetensors index and headers)."""
    exit_code: int | None = None


def _attempt(annotations: Mapping[str, Any]) -> int:
    raw = str(annotations.get(ATTEMPT_ANNOTATION) or "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 10_000 else 1


def _observed_job(job: Mapping[str, Any], node: str, source: str) -> ObservedFetch:
    meta, status = job.get("metadata") or {}, job.get("status") or {}
    evict = (meta.get("labels") or {}).get(ACTION_LABEL) == "evict"
    attempt = _attempt(meta.get("annotations") or {})
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    name = meta["name"]
    if "Complete" in conditions or (status.get("succeeded") or 0) > 0:
        completed = status.get("completionTime")
        return ObservedFetch(name, node, source, WeightsState.PRESENT, None, evict, completed, attempt)
    failed = conditions.get("Failed")
    if failed is not None:
        message = f"{failed.get('reason') or 'Failed'}: {failed.get('message') or ''}".rstrip(": ")
        when = failed.get("lastTransitionTime")
        return ObservedFetch(name, node, source, WeightsState.FAILED, message, evict, None, attempt, when)
    return ObservedFetch(name, node, source, WeightsState.FETCHING, None, evict, None, attempt)


def build_observed_fetch(job: Mapping[str, Any]) -> ObservedFetch | None:
    """A fetch or eviction Job (on a node); None for anything else, a metadata Job included."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    node, source = annotations.get(NODE_ANNOTATION), annotations.get(SOURCE_ANNOTATION)
    if not node or not source:
        return None
    return _observed_job(job, str(node), str(source))


def build_observed_metadata(job: Mapping[str, Any]) -> ObservedFetch | None:
    """A metadata Job (no node); None for anything else."""
    meta = job.get("metadata") or {}
    source = (meta.get("annotations") or {}).get(SOURCE_ANNOTATION)
    if (meta.get("labels") or {}).get(ACTION_LABEL) != METADATA_ACTION or not source:
        return None
    return _observed_job(job, "", str(source))


def build_fetch_result(pod_status: Mapping[str, Any]) -> FetchResult | None:
    """The fetch's JSON result from a terminated pod's status, None when it left none."""
    for container in pod_status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        try:
            data = json.loads(terminated.get("message") or "")
        except ValueError:
            continue
        if isinstance(data, dict):
            size, code = data.get("bytes"), terminated.get("exitCode")
            return FetchResult(
                bytes=size if isinstance(size, int) and size >= 0 else None,
                revision=str(data["revision"]) if data.get("revision") else None,
                error=str(data["error"]) if data.get("error") else None,
                message=str(data["message"]) if data.get("message") else None,
                model=parse_facts_record(data.get("model")),
                exit_code=code if isinstance(code, int) else None,
            )
    return None


@dataclass(frozen=True)
class CacheObserved:
    """The namespace's cache objects as watched."""

    claim_uid: str | None = None
    """The cache claim's uid; None: no claim yet."""
    volume_exists: bool = False
    directory_jobs: frozenset[str] = frozenset()
    """Names of the directory Jobs in the operator's namespace."""
    fetches: tuple[ObservedFetch, ...] = ()
    results: Mapping[str, FetchResult] | None = None
    """A fetch (or metadata) Job's result, by Job name, from its latest terminated pod."""
    metadata: tuple[ObservedFetch, ...] = ()
    """The namespace's metadata Jobs (`build_observed_metadata`)."""


@dataclass(frozen=True)
class FetchRetry:
    """What follows a failed fetch or metadata Job."""

    attempt: int
    """The attempt that failed."""
    at: datetime | None
    """When the next attempt starts; None: not retried (a failure a rerun cannot heal)."""
    error: str | None = None
    """Why not: the fetch's error."""

    def describe(self) -> str:
        if self.at is None:
            return f"attempt {self.attempt} failed and is not retried ({self.error} does not heal by itself)"
        return f"attempt {self.attempt} failed; attempt {self.attempt + 1} at {rfc3339(self.at)}"


def compute_retry_delay(attempt: int) -> float:
    """Seconds after the `attempt`-th failure before the next: 30 s doubling, at most 10 min."""
    doublings: int = min(max(0, attempt - 1), 32)
    return min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * float(2**doublings))


def compute_fetch_retry(fetch: ObservedFetch, result: FetchResult | None, now: datetime) -> FetchRetry | None:
    """A failed fetch or metadata Job is retried after `compute_retry_delay` from its failure,
    unless its result says the failure does not heal (PERMANENT_ERRORS, PERMANENT_EXIT_CODES).
    A Job that left no result (killed, out of memory, past its deadline) is retried."""
    if fetch.state != WeightsState.FAILED or fetch.evict:
        return None
    if result is not None and (result.error in PERMANENT_ERRORS or result.exit_code in PERMANENT_EXIT_CODES):
        return FetchRetry(fetch.attempt, None, result.error or f"exit code {result.exit_code}")
    failed = parse_rfc3339(fetch.failed_at) or now
    return FetchRetry(fetch.attempt, failed + timedelta(seconds=compute_retry_delay(fetch.attempt)))


def compute_current_fetches(fetches: Iterable[ObservedFetch]) -> dict[str, ObservedFetch]:
    """The latest attempt per node (a failed attempt its retry replaced may still be there)."""
    latest: dict[str, ObservedFetch] = {}
    for f in fetches:
        if f.node not in latest or f.attempt > latest[f.node].attempt:
            latest[f.node] = f
    return latest
