"""How long a service's replicas take to start, learned from its pods (issue 17).

A replica's start is the time from its pod's creation to its Ready condition: scheduling,
the image pull, the weights (downloaded, or read from the node's cache) and the engine's load.
It depends mostly on the node: on a *warm* node (the weights cache held the model when the pod
was created) it is the load alone, on a *cold* one it includes the download. Without a weights
cache every start is cold.

`compute_startup_stats` keeps the last `RECENT` durations of each kind and estimates each by
their median, so one stuck pod (a crash loop, an image registry outage) does not move it;
`compute_expected_start` gives the scaling policy the start of the NEXT replica: warm when a
warm node has room for it, else cold. Everything here is pure: the operator's autoscaler and
the benchmark (`bench/autoscale`) call the same functions.

Whether a node was warm when a pod was created needs the time its cache turned Present.
`compute_node_warmth` records, tick by tick, since when each node has been seen Present; nodes
already Present at the first look (a restarted operator) are warm "since before we looked",
and a pod created on such a node before that look is left out rather than guessed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from inferfleet.api.status import StartupStatus
from inferfleet.planning.conditions import find_true_condition, parse_rfc3339

RECENT = 9
"""Durations kept per kind (warm, cold): the median of nine ignores up to four outliers."""

MAX_COUNTED_AT_LAST = 64
"""Pods kept as counted at the newest Ready second (the status bound); beyond it a pod that
became Ready in that same second may be counted twice, never lost."""

WarmSince = Mapping[str, float]


@dataclass(frozen=True)
class PodStart:
    """One pod of the service: where it runs, when it was created and became Ready (epoch seconds)."""

    name: str
    node: str | None
    created: float
    ready: float | None
    """When its Ready condition turned True (None: not Ready)."""


@dataclass(frozen=True)
class NodeWarmth:
    """Since when each node's cache has held the service's weights, as the operator saw it."""

    since: WarmSince
    first_look: float
    """The first observation: a node Present then was warm since some unknown earlier time."""


@dataclass(frozen=True)
class StartupStats:
    """Recent start durations (seconds, oldest first) and what has been counted."""

    warm: tuple[float, ...] = ()
    cold: tuple[float, ...] = ()
    samples: int = 0
    """Starts counted since the service was created."""
    learned_until: float | None = None
    """The Ready time of the newest counted pod: older ones are already counted."""
    counted_at_last: tuple[str, ...] = ()
    """The pods counted with exactly that Ready time (timestamps have a one-second grain)."""

    @property
    def warm_seconds(self) -> float | None:
        return _median(self.warm)

    @property
    def cold_seconds(self) -> float | None:
        return _median(self.cold)

    def to_status(self) -> StartupStatus:
        """The typed `status.startup` (the inverse of `from_status` on its dump)."""
        return StartupStatus(
            warm_seconds=_rounded(self.warm_seconds),
            cold_seconds=_rounded(self.cold_seconds),
            samples=self.samples,
            recent_warm=[round(d, 1) for d in self.warm],
            recent_cold=[round(d, 1) for d in self.cold],
            learned_until=self.learned_until,
            counted_at_last=list(self.counted_at_last[-MAX_COUNTED_AT_LAST:]),
        )

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> StartupStats:
        """Parse `to_status` output; anything missing or malformed is dropped, never raised."""
        if not isinstance(raw, Mapping):
            return cls()
        samples = raw.get("samples")
        until = _duration(raw.get("learnedUntil"))
        names = raw.get("countedAtLast")
        return cls(
            warm=_durations(raw.get("recentWarm")),
            cold=_durations(raw.get("recentCold")),
            samples=samples
            if isinstance(samples, int) and not isinstance(samples, bool) and samples >= 0
            else 0,
            learned_until=until,
            counted_at_last=tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else (),
        )


def compute_node_warmth(previous: NodeWarmth | None, present: Iterable[str], now: float) -> NodeWarmth:
    """Since when each node whose cache now holds the weights has been seen holding them."""
    present = set(present)
    if previous is None:
        return NodeWarmth({node: now for node in present}, now)
    since = {node: previous.since.get(node, now) for node in present}
    return NodeWarmth(since, previous.first_look)


def classify_start(pod: PodStart, cache: bool, warmth: NodeWarmth | None) -> str | None:
    """ "warm", "cold", or None when it cannot be told (the node turned Present before the
    operator's first look and the pod is older than that look)."""
    if not cache:
        return "cold"
    since = (warmth.since if warmth else {}).get(pod.node or "")
    if since is None:
        return "cold"  # not Present now: it was not when the pod started (a cache is not emptied under a pod)
    if since <= pod.created:
        return "warm"
    if warmth is not None and since <= warmth.first_look:
        return None
    return "cold"


def compute_startup_stats(
    previous: StartupStats, pods: Iterable[PodStart], cache: bool, warmth: NodeWarmth | None
) -> StartupStats:
    """`previous` with the starts of the pods that became Ready since it was learned."""
    until, at_last = previous.learned_until, set(previous.counted_at_last)
    fresh = sorted(
        (p for p in pods if p.ready is not None and p.ready >= p.created and _is_new(p, until, at_last)),
        key=lambda p: (p.ready, p.name),
    )
    if not fresh:
        return previous
    warm, cold, samples = list(previous.warm), list(previous.cold), previous.samples
    for pod in fresh:
        assert pod.ready is not None
        kind = classify_start(pod, cache, warmth)
        if kind is not None:
            (warm if kind == "warm" else cold).append(pod.ready - pod.created)
            samples += 1
        if until is None or pod.ready > until:
            until, at_last = pod.ready, set()
        at_last.add(pod.name)
    return StartupStats(tuple(warm[-RECENT:]), tuple(cold[-RECENT:]), samples, until, tuple(sorted(at_last)))


def compute_warm_room(present: Iterable[str], serving: Iterable[str | None]) -> bool:
    """Whether a node holding the weights runs none of the service's pods: where the next
    replica lands warm (prefetched nodes are exactly these). Nodes that already run one may have
    room too, but the autoscaler does not know their free GPUs, so it does not count on them."""
    return bool(set(present) - set(serving))


def compute_expected_start(stats: StartupStats, warm_room: bool) -> float | None:
    """The next replica's expected start: the warm estimate when a warm node has room, else the
    cold one; None while nothing of that kind has been seen (the policy then uses its constant)."""
    if warm_room and stats.warm_seconds is not None:
        return stats.warm_seconds
    return stats.cold_seconds


def build_pod_start(
    name: str, meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]
) -> PodStart | None:
    """A pod as the API shows it: created (`metadata.creationTimestamp`) and Ready (its Ready
    condition's `lastTransitionTime` while True); None without a creation time or when deleting."""
    created = parse_timestamp(meta.get("creationTimestamp"))
    if created is None or meta.get("deletionTimestamp"):
        return None
    condition = find_true_condition(status.get("conditions"), "Ready")
    ready = parse_timestamp(condition.get("lastTransitionTime")) if condition else None
    node = spec.get("nodeName")
    return PodStart(name, node if isinstance(node, str) else None, created, ready)


def compute_present_nodes(weights: object) -> tuple[bool, list[str]]:
    """From `status.weights`: whether the service's weights are cached at all (any entry), and
    the nodes where they are Present."""
    entries = [w for w in weights if isinstance(w, Mapping)] if isinstance(weights, list) else []
    present = [str(w["node"]) for w in entries if w.get("state") == "Present" and w.get("node")]
    return bool(entries), present


def parse_timestamp(value: object) -> float | None:
    """An RFC 3339 time (as Kubernetes writes them) in epoch seconds, or None."""
    when = parse_rfc3339(value)
    return when.timestamp() if when is not None else None


def _is_new(pod: PodStart, until: float | None, at_last: set[str]) -> bool:
    assert pod.ready is not None
    return until is None or pod.ready > until or (pod.ready == until and pod.name not in at_last)


def _median(values: tuple[float, ...]) -> float | None:
    return float(statistics.median(values)) if values else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _duration(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) and f >= 0 else None


def _durations(value: object) -> tuple[float, ...]:
    if not isinstance(value, list):
        return ()
    kept = (d for d in (_duration(v) for v in value) if d is not None)
    return tuple(kept)[-RECENT:]
