"""Replica starts in the demo, cold and warm, as the cluster recorded them (issue 17).

The demo runs the operator with the node weights cache on (see demo.driver): a service's first
replica on a node finds no copy of its weights there, so the operator runs a fetch Job on that
node (a *cold* start); a later replica on a node whose fetch Job had completed before the pod was
created reads the node's copy (a *warm* start). Scale-ups of the autoscaled services land warm
where a first replica already fetched, and cold on a node new to the service; the service woken
from zero starts cold.

`StartLedger.observe` keeps every engine pod and every fetch Job the demo's samples saw, with the
API's own timestamps: a pod's `creationTimestamp` and its Ready condition's `lastTransitionTime`
(start to Ready), a Job's `creationTimestamp` and `status.completionTime` (the fetch), and each
service's learned `status.startup` (planning/startup.py: warm and cold medians). Nothing here is
typed in: `classify_start` marks a start warm only when the node's fetch Job completed in an
earlier second than the pod's creation, cold when no fetch had completed by then, and unknown when
both fall in the same second (the API's timestamps have a one-second grain). `start_lines`
renders the report's section; `starts_json` the same for samples.json. All pure.

On the demo's cluster a cold start really waits for its fetch (LocalCluster.fetch_seconds: KWOK
completes a fetch's pod after a stand-in delay for the download; PodEngines plays the engine pod's
`wait-for-weights` init container and its readiness probe), so cold and warm differ by that fetch.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from inferfleet.demo.view import parse_time
from inferfleet.planning.conditions import find_true_condition
from inferfleet.planning.names import SERVICE_LABEL
from inferfleet.planning.weights_naming import CACHE_LABEL, NODE_ANNOTATION, SOURCE_ANNOTATION

FETCH_SELECTOR = f"{CACHE_LABEL}=fetch"
"""The operator's fetch Jobs (label selector)."""
WARM, COLD, UNKNOWN, PENDING = "warm", "cold", "unknown", "not placed"

FETCH_PROOF = (
    "The fetch itself (`inferfleet fetch-model`: resume, checksums, atomic publish, one download per "
    "node) is proven as a process in tests/unit/test_fetch_model.py."
)
KWOK_NOTE = (
    "On this local cluster KWOK plays the kubelet: it runs no container. Here it reports the engine "
    "pod's `wait-for-weights` init container done as soon as the pod starts, and a fetch Job's pod "
    "Succeeded as soon as it runs, so a cold start here does not wait for a download and the "
    "fetch's seconds are the control plane's (Job, scheduling, the volume), not a transfer: cold "
    "and warm seconds here differ only by what the control plane did. On a GPU node a cold start "
    "waits for the fetch, which downloads the model. " + FETCH_PROOF
)


def kwok_note(fetch_seconds: float | None) -> str:
    """The report's footnote on what a start on this cluster includes."""
    if fetch_seconds is None:
        return KWOK_NOTE
    download = (
        f", a stand-in for the download (every model alike: the 8B's 16 GB at {16 / fetch_seconds:.2g} GB/s)"
        if fetch_seconds > 0
        else " (no stand-in for a download)"
    )
    return (
        "On this local cluster KWOK plays the kubelet: it runs no container. A fetch Job's pod "
        f"completes {fetch_seconds:g} s after it starts{download}, and the demo's engines play the "
        "`wait-for-weights` init container: a pod's engine starts, and its readiness probe can pass, "
        "only once its node's fetch Job for the service's weights completed. So a cold start here "
        "includes that fetch (the operator's Job, its scheduling and the stand-in delay) and a warm "
        "one does not; Ready is the engine answering the pod's readinessProbe, as a kubelet decides "
        "it. " + FETCH_PROOF
    )


@dataclass(frozen=True)
class StartRecord:
    """One engine pod: where it ran, when it was created and turned Ready (None: not seen Ready)."""

    service: str
    pod: str
    node: str | None
    created: datetime
    ready: datetime | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.ready is None else (self.ready - self.created).total_seconds()


@dataclass(frozen=True)
class FetchRecord:
    """One fetch Job: the node and source it fetches, when it was created and completed."""

    job: str
    node: str
    source: str
    created: datetime
    completed: datetime | None = None
    failed: bool = False


@dataclass(frozen=True)
class ClassifiedStart:
    start: StartRecord
    kind: str
    """WARM, COLD, UNKNOWN or PENDING (no node yet)."""
    fetch: FetchRecord | None
    """The fetch that made it warm, or the node's fetch that ran for it (cold), if any."""


@dataclass
class StartLedger:
    starts: dict[str, StartRecord] = field(default_factory=dict)
    """By pod uid, first seen to last: the node once bound, the first Ready time seen."""
    fetches: dict[str, FetchRecord] = field(default_factory=dict)
    """By Job uid."""
    sources: dict[str, str] = field(default_factory=dict)
    """Service -> spec.model.source."""
    learned: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    """Service -> its status.startup as last seen (the operator's learned warm and cold medians)."""
    fetch_seconds: float | None = None
    """How long the cluster takes to complete a fetch's pod, when a cold start waits for it
    (LocalCluster.fetch_seconds with PodEngines playing the wait); None: it does not wait."""

    def observe(
        self,
        services: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        jobs: Iterable[Mapping[str, Any]],
    ) -> None:
        """The services' engine pods and fetch Jobs as the API shows them now."""
        names: set[tuple[str, str]] = set()
        for service in services:
            meta, spec = service["metadata"], service.get("spec") or {}
            names.add((meta.get("namespace", ""), meta["name"]))
            self.sources[meta["name"]] = str((spec.get("model") or {}).get("source", ""))
            startup = (service.get("status") or {}).get("startup")
            if isinstance(startup, Mapping):
                self.learned[meta["name"]] = dict(startup)
        for pod in pods:
            meta = pod["metadata"]
            owner = str((meta.get("labels") or {}).get(SERVICE_LABEL))
            if (meta.get("namespace", ""), owner) not in names or not meta.get("uid"):
                continue
            record = build_start_record(owner, pod)
            if record is not None:
                self.starts[meta["uid"]] = merge_start(self.starts.get(meta["uid"]), record)
        for job in jobs:
            fetch = build_fetch_record(job)
            if fetch is not None and job["metadata"].get("uid"):
                self.fetches[job["metadata"]["uid"]] = fetch

    def classified(self) -> list[ClassifiedStart]:
        """Every start seen, oldest first, marked warm, cold or unknown."""
        fetches = list(self.fetches.values())
        return [
            classify_start(s, self.sources.get(s.service, ""), fetches)
            for s in sorted(self.starts.values(), key=lambda s: (s.created, s.service, s.pod))
        ]


def merge_start(previous: StartRecord | None, seen: StartRecord) -> StartRecord:
    """A pod seen again: its node once bound, and the first Ready time seen (a pod that turns
    unready later, terminating, keeps the start it had)."""
    if previous is None:
        return seen
    node = seen.node or previous.node
    ready = previous.ready or seen.ready
    return StartRecord(seen.service, seen.pod, node, previous.created, ready)


def build_start_record(service: str, pod: Mapping[str, Any]) -> StartRecord | None:
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    created = parse_time(meta.get("creationTimestamp"))
    if created is None:
        return None
    condition = find_true_condition(status.get("conditions"), "Ready")
    ready = parse_time(condition.get("lastTransitionTime")) if condition else None
    node = spec.get("nodeName")
    return StartRecord(service, str(meta["name"]), node if isinstance(node, str) else None, created, ready)


def build_fetch_record(job: Mapping[str, Any]) -> FetchRecord | None:
    meta, status = job["metadata"], job.get("status") or {}
    annotations = meta.get("annotations") or {}
    node, source = annotations.get(NODE_ANNOTATION), annotations.get(SOURCE_ANNOTATION)
    created = parse_time(meta.get("creationTimestamp"))
    if (meta.get("labels") or {}).get(CACHE_LABEL) != "fetch" or not node or not source or created is None:
        return None
    failed = any(
        c.get("type") == "Failed" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return FetchRecord(
        str(meta["name"]), str(node), str(source), created, parse_time(status.get("completionTime")), failed
    )


def classify_start(start: StartRecord, source: str, fetches: Sequence[FetchRecord]) -> ClassifiedStart:
    """Warm: a fetch of `source` on the pod's node completed in an earlier second than the pod's
    creation. Unknown: one completed in that same second. Cold: none had completed by then."""
    if start.node is None:
        return ClassifiedStart(start, PENDING, None)
    own = sorted(
        (f for f in fetches if f.node == start.node and f.source == source and not f.failed),
        key=lambda f: f.created,
    )
    earlier = [f for f in own if f.completed is not None and f.completed < start.created]
    if earlier:
        return ClassifiedStart(start, WARM, earlier[-1])
    same = [f for f in own if f.completed == start.created]
    if same:
        return ClassifiedStart(start, UNKNOWN, same[0])
    return ClassifiedStart(start, COLD, own[0] if own else None)


def _seconds_since(at: datetime | None, started: datetime) -> str:
    return "-" if at is None else str(round((at - started).total_seconds()))  # round(): never "-0"


def _weights_text(c: ClassifiedStart, started: datetime) -> str:
    fetch = c.fetch
    if c.kind == PENDING:
        return "the pod was never bound to a node while sampled"
    if fetch is None:
        return "no copy on the node and no fetch Job seen for it"
    done = fetch.completed
    at = _seconds_since(done, started)
    if c.kind == WARM and done is not None:
        before = (c.start.created - done).total_seconds()
        return f"there {before:.0f} s before the pod: {fetch.job} complete at {at} s"
    if c.kind == UNKNOWN:
        return f"{fetch.job} complete in the second the pod was created: cannot tell at the API's grain"
    text = f"not there yet: {fetch.job} created at {_seconds_since(fetch.created, started)} s"
    if done is None:
        return text + ", not complete when last seen"
    took = (done - fetch.created).total_seconds()
    return text + f", complete at {at} s ({took:.0f} s)"


STARTS_HEAD = [
    "| service | pod | node | created (s) | start | start to Ready (s) | the node's copy of the weights |",
    "|---|---|---|---|---|---|---|",
]
SIDE_BY_SIDE_HEAD = [
    "| service | cold starts seen | warm starts seen | learned cold (median s) | learned warm (median s) "
    "| starts the operator counted |",
    "|---|---|---|---|---|---|",
]


def _start_row(c: ClassifiedStart, started: datetime) -> str:
    s = c.start
    seconds = "not Ready when last seen" if s.seconds is None else f"{s.seconds:.0f}"
    return (
        f"| {s.service} | {s.pod} | {s.node or '-'} | {_seconds_since(s.created, started)} | **{c.kind}** "
        f"| {seconds} | {_weights_text(c, started)} |"
    )


def _observed(kind: str, starts: Sequence[ClassifiedStart]) -> str:
    seconds = [c.start.seconds for c in starts if c.kind == kind and c.start.seconds is not None]
    count = sum(c.kind == kind for c in starts)
    if not seconds:
        return f"{count}" if count else "-"
    return f"{count}: median {statistics.median(seconds):.0f} s ({min(seconds):.0f} to {max(seconds):.0f})"


def _median_text(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _side_by_side_row(service: str, starts: Sequence[ClassifiedStart], learned: Mapping[str, Any]) -> str:
    counted = learned.get("samples")
    return (
        f"| {service} | {_observed(COLD, starts)} | {_observed(WARM, starts)} "
        f"| {_median_text(learned.get('coldSeconds'))} | {_median_text(learned.get('warmSeconds'))} "
        f"| {counted if isinstance(counted, int) else '-'} |"
    )


def start_lines(ledger: StartLedger, started: datetime) -> list[str]:
    """The report's section: per service, cold and warm starts side by side with what the operator
    learned (status.startup), then every start with its node and the node's fetch."""
    classified = ledger.classified()
    if not classified:
        return ["No engine pod was seen."]
    services = sorted({c.start.service for c in classified} | set(ledger.learned))

    def learned(service: str) -> Mapping[str, Any]:
        return ledger.learned.get(service) or {}

    return [
        "A start is an engine pod's creation to its Ready condition, from the API's timestamps (to the "
        "second). **Warm**: the node's fetch Job for the service's weights had completed before the pod "
        "was created; **cold**: it had not, so on a GPU node the pod waits for that fetch. Times in "
        "seconds since the load started (negative: while the services were applied). "
        "The learned medians are the operator's `status.startup`, which the autoscaler's lookahead uses "
        "(autoscaled services only).¹",
        "",
        *SIDE_BY_SIDE_HEAD,
        *(
            _side_by_side_row(n, [c for c in classified if c.start.service == n], learned(n))
            for n in services
        ),
        "",
        *STARTS_HEAD,
        *(_start_row(c, started) for c in classified),
        "",
        f"¹ {kwok_note(ledger.fetch_seconds)}",
    ]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _fetch_json(f: FetchRecord) -> dict[str, Any]:
    return {"job": f.job, "node": f.node, "created": _iso(f.created), "completed": _iso(f.completed),
            "failed": f.failed}  # fmt: skip


def starts_json(ledger: StartLedger, service: str) -> dict[str, Any]:
    """The service's starts as classified, with the raw times they were classified from, its
    source's fetch Jobs and its learned status.startup."""
    source = ledger.sources.get(service, "")
    starts = [
        {
            "pod": c.start.pod,
            "node": c.start.node,
            "kind": c.kind,
            "created": _iso(c.start.created),
            "ready": _iso(c.start.ready),
            "seconds": c.start.seconds,
            "fetch": None if c.fetch is None else _fetch_json(c.fetch),
        }
        for c in ledger.classified()
        if c.start.service == service
    ]
    fetches = sorted((f for f in ledger.fetches.values() if f.source == source), key=lambda f: f.created)
    return {
        "starts": starts,
        "fetches": [_fetch_json(f) for f in fetches],
        "startup": dict(ledger.learned.get(service) or {}) or None,
        "fetch_seconds": ledger.fetch_seconds,
    }
